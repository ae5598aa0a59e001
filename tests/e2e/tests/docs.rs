//! The docs are the source of truth, and this test keeps them true: it fails when a
//! chapter (docs/*.md, the READMEs, the chart's README, SECURITY.md) names something the
//! code does not have, or when the code has a setting, a subcommand, a metric or a
//! resource field the docs never mention.
//!
//! Every check reads the real sources: the CLIs' own clap parsers (`hostplug-operator`,
//! `hostplug-web`, `hostplug`, `kubectl hostplug`) parse each command line the docs show;
//! the operator's metrics are those its registry renders; the worker's variables are
//! `hostplug_api::worker::env::ALL`; resource names and fields come from the generated
//! CRDs in deploy/crds; and every YAML manifest in the docs is applied server-side as a
//! dry run against a real API server with those CRDs. Planted mistakes (a wrong flag, an
//! unknown subcommand, a made-up variable) show that each check can fail.
//!
//! It never edits the docs or the code; a failure lists every mismatch with its file and
//! line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use hostplug_e2e::{Harness, NAMESPACE, repo_root};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};

/// One Markdown file of the docs, relative to the repository root.
struct Doc {
    path: String,
    text: String,
}

/// Directories never searched for docs: build output, vendored references, VCS data.
const SKIP_DIRS: [&str; 4] = ["target", ".git", "reference", "node_modules"];

/// The docs: every `*.md` in docs/, the top-level Markdown files, and every README.md
/// up to three directories deep (crates, plugins, the chart, test helpers).
fn docs() -> anyhow::Result<Vec<Doc>> {
    let root = repo_root();
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("docs"))? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "md") {
            paths.insert(p);
        }
    }
    for entry in std::fs::read_dir(&root)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "md") {
            paths.insert(p);
        }
    }
    fn readmes(dir: &Path, depth: usize, out: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
        if depth == 0 {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if p.is_dir() && !SKIP_DIRS.contains(&name) {
                let readme = p.join("README.md");
                if readme.is_file() {
                    out.insert(readme);
                }
                readmes(&p, depth - 1, out)?;
            }
        }
        Ok(())
    }
    readmes(&root, 3, &mut paths)?;
    paths
        .into_iter()
        .map(|p| {
            Ok(Doc {
                text: std::fs::read_to_string(&p).with_context(|| p.display().to_string())?,
                path: p.strip_prefix(&root).unwrap_or(&p).display().to_string(),
            })
        })
        .collect()
}

/// A piece of code in a doc: a fenced block (with its language) or an inline span.
#[derive(Debug, Clone)]
struct Code {
    /// 1-based line where it starts.
    line: usize,
    /// The fence's language (`sh`, `yaml`, …); `None` for an inline span.
    lang: Option<String>,
    text: String,
}

/// The fenced blocks and inline code spans of a Markdown text.
fn code_of(text: &str) -> Vec<Code> {
    let mut out = Vec::new();
    let mut fence: Option<(usize, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("```") {
            match fence.take() {
                Some((start, lang, body)) => out.push(Code {
                    line: start,
                    lang: Some(lang),
                    text: body,
                }),
                None => fence = Some((i + 1, rest.trim().to_owned(), String::new())),
            }
            continue;
        }
        if let Some((_, _, body)) = fence.as_mut() {
            body.push_str(line);
            body.push('\n');
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('`') else { break };
            out.push(Code {
                line: i + 1,
                lang: None,
                text: after[..end].to_owned(),
            });
            rest = &after[end + 1..];
        }
    }
    out
}

/// Whether a fence holds shell commands.
fn is_shell(lang: &str) -> bool {
    matches!(lang, "" | "sh" | "bash" | "shell" | "console")
}

/// The command lines of a piece of code: a shell block's lines (continuations joined,
/// prompts and comments dropped), or an inline span that reads as one whole command
/// (no `…`, `[`, `|` or `<`: a synopsis with alternatives is prose, not a command line).
fn command_lines(code: &Code) -> Vec<(usize, Vec<String>)> {
    match &code.lang {
        Some(lang) if is_shell(lang) => {
            let mut out = Vec::new();
            let mut pending = String::new();
            let mut start = code.line + 1;
            for (i, line) in code.text.lines().enumerate() {
                if pending.is_empty() {
                    start = code.line + 1 + i;
                }
                let line = line.trim_start().trim_start_matches("$ ");
                if let Some(head) = line.strip_suffix('\\') {
                    pending.push_str(head);
                    pending.push(' ');
                    continue;
                }
                pending.push_str(line);
                // A heredoc or a pipe: only the first command is ours to check.
                let command = pending.split(" | ").next().unwrap_or_default();
                if let Some(words) = shlex::split(command)
                    && !words.is_empty()
                {
                    out.push((start, words));
                }
                pending.clear();
            }
            out
        }
        Some(_) => Vec::new(),
        None => {
            if ["…", "[", "|", "<", "..."]
                .iter()
                .any(|c| code.text.contains(c))
            {
                return Vec::new();
            }
            shlex::split(&code.text)
                .filter(|w| !w.is_empty())
                .map(|w| vec![(code.line, w)])
                .unwrap_or_default()
        }
    }
}

/// What a parser says of a command named in a sentence without its arguments.
const MENTION_ERRORS: [clap::error::ErrorKind; 3] = [
    clap::error::ErrorKind::MissingRequiredArgument,
    clap::error::ErrorKind::MissingSubcommand,
    clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
];

/// What one of our CLIs makes of a command line: `None` when it is not one of ours,
/// else the parser's verdict (its error kind and first line).
fn parse_ours(words: &[String]) -> Option<Result<(), (clap::error::ErrorKind, String)>> {
    let first = words.first()?.as_str();
    let verdict = |r: Result<(), clap::Error>| match r {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            Ok(())
        }
        Err(e) => Err((
            e.kind(),
            e.to_string().lines().next().unwrap_or_default().to_owned(),
        )),
    };
    match first {
        "kubectl" if words.get(1).is_some_and(|w| w == "hostplug") => {
            let argv = std::iter::once("kubectl-hostplug".to_owned()).chain(words[2..].to_vec());
            Some(verdict(
                kubectl_hostplug::Cli::command()
                    .try_get_matches_from(argv)
                    .map(drop),
            ))
        }
        "kubectl-hostplug" => Some(verdict(
            kubectl_hostplug::Cli::command()
                .try_get_matches_from(words)
                .map(drop),
        )),
        "hostplug" => Some(verdict(
            hostplug_cli::Cli::command()
                .try_get_matches_from(words)
                .map(drop),
        )),
        "hostplug-operator" => Some(verdict(
            hostplug_operator::Config::command()
                .try_get_matches_from(words)
                .map(drop),
        )),
        "hostplug-web" => Some(verdict(
            hostplug_web::state::WebConfig::command()
                .try_get_matches_from(words)
                .map(drop),
        )),
        _ => None,
    }
}

/// Command lines of our CLIs in `docs` that their parsers refuse: `path:line: problem`.
/// An inline span may name a command without its arguments (`hostplug plugin push`
/// in a sentence), so there only unknown arguments and subcommands count; a block's
/// lines are whole commands and must parse.
fn bad_command_lines(docs: &[Doc]) -> Vec<String> {
    let mut bad = Vec::new();
    for doc in docs {
        for code in code_of(&doc.text) {
            for (line, words) in command_lines(&code) {
                if let Some(Err((kind, problem))) = parse_ours(&words)
                    && (code.lang.is_some() || !MENTION_ERRORS.contains(&kind))
                {
                    bad.push(format!(
                        "{}:{line}: `{}`: {problem}",
                        doc.path,
                        words.join(" ")
                    ));
                }
            }
        }
    }
    bad
}

/// Every `kubectl hostplug` and `hostplug plugin` subcommand (hidden ones aside) the docs
/// never show as a command.
fn undocumented_subcommands(docs: &[Doc]) -> Vec<String> {
    let mut shown = BTreeSet::new();
    for doc in docs {
        for code in code_of(&doc.text) {
            let words: Vec<String> = if code.lang.is_some() {
                command_lines(&code)
                    .into_iter()
                    .flat_map(|(_, w)| [w, vec!["\n".to_owned()]].concat())
                    .collect()
            } else {
                code.text.split_whitespace().map(str::to_owned).collect()
            };
            for w in words.windows(3) {
                shown.insert(w.join(" "));
            }
        }
    }
    let mut missing = Vec::new();
    let kubectl = kubectl_hostplug::Cli::command();
    for sub in kubectl.get_subcommands().filter(|s| !s.is_hide_set()) {
        let line = format!("kubectl hostplug {}", sub.get_name());
        if !shown.contains(&line) {
            missing.push(line);
        }
    }
    let author = hostplug_cli::Cli::command();
    for group in author.get_subcommands() {
        for sub in group.get_subcommands().filter(|s| !s.is_hide_set()) {
            let line = format!("hostplug {} {}", group.get_name(), sub.get_name());
            if !shown.contains(&line) {
                missing.push(line);
            }
        }
    }
    missing
}

/// The `HOSTPLUG_*` names anywhere outside Markdown: the Rust sources, the Makefile,
/// scripts, manifests and chart templates — what the code reads or sets.
fn names_in_code() -> anyhow::Result<BTreeSet<String>> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if p.is_dir() {
                if !SKIP_DIRS.contains(&name) && name != "docs" {
                    walk(&p, out)?;
                }
                continue;
            }
            if p.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            out.extend(env_names(&text));
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    walk(&repo_root(), &mut out)?;
    Ok(out)
}

/// The `HOSTPLUG_[A-Z0-9_]+` words of a text (a trailing `_`, as in `HOSTPLUG_WEB_…`,
/// is a prefix and left out).
fn env_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("HOSTPLUG_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len().max(1)..];
        if !word.ends_with('_') {
            out.insert(word);
        }
    }
    out
}

/// The rows of the Markdown table under the heading that starts with `heading` in
/// `text` (up to the next heading), each row's cells.
fn table_under(text: &str, heading: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with('#') {
            inside = line.trim_start_matches('#').trim().starts_with(heading);
            continue;
        }
        if inside && line.starts_with('|') && !line.starts_with("|---") {
            rows.push(
                line.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_owned())
                    .collect(),
            );
        }
    }
    rows
}

/// The `--flag`s and `HOSTPLUG_*`/other variables of a clap command that the rows do
/// not name, and the flags and variables of the rows' first two columns the command
/// does not have. `what` names the command in the messages.
fn settings_table_drift(
    command: &clap::Command,
    rows: &[Vec<String>],
    where_: &str,
    what: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let table: String = rows.iter().map(|r| r.join(" | ") + "\n").collect();
    let mut flags = BTreeSet::new();
    let mut vars = BTreeSet::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let flag = format!("--{long}");
        if !table.contains(&format!("`{flag}`")) {
            problems.push(format!("{where_}: {what}'s {flag} is not in the table"));
        }
        flags.insert(flag);
        if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
            let short = env.rsplit('_').next().unwrap_or_default();
            if !table.contains(&format!("`{env}`")) && !table.contains(&format!("…_{short}`")) {
                problems.push(format!(
                    "{where_}: {what}'s variable {env} is not in the table"
                ));
            }
            vars.insert(env.to_owned());
        }
    }
    for row in rows {
        for cell in row.iter().take(2) {
            for word in cell.split(['`', ',', ' ']).filter(|w| !w.is_empty()) {
                if word.starts_with("--") && !flags.contains(word) {
                    problems.push(format!(
                        "{where_}: the table names {word}, which {what} does not have"
                    ));
                }
                if word.starts_with("HOSTPLUG_") && !vars.contains(word) {
                    problems.push(format!(
                        "{where_}: the table names {word}, which {what} does not read"
                    ));
                }
            }
        }
    }
    problems
}

/// The metric families the operator's registry renders (`# TYPE name kind`), each
/// observed once (a labelled family with no series renders nothing).
fn operator_metrics() -> BTreeMap<String, String> {
    let m = hostplug_operator::metrics::Metrics::default();
    m.reconcile();
    m.reconcile_error();
    m.node_finished(true);
    m.invocation(std::time::Duration::from_millis(1));
    m.api_request();
    m.set_leader(true);
    m.state_check("s", std::time::Duration::from_millis(1));
    m.state_correction("s");
    m.state_round("s");
    m.state_status_write("s");
    m.state_nodes("s", 1, 1, 1);
    m.render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some((name.to_owned(), kind.to_owned()))
        })
        .collect()
}

/// Whether `word` is the name of a series of one of `metrics` (counters gain `_total`,
/// histograms `_bucket`, `_sum` and `_count`).
fn is_series(word: &str, metrics: &BTreeMap<String, String>) -> bool {
    metrics.contains_key(word)
        || ["_total", "_bucket", "_sum", "_count"].iter().any(|s| {
            word.strip_suffix(s)
                .is_some_and(|b| metrics.contains_key(b))
        })
}

/// The workspace's crate names as Rust spells them (`hostplug_api`, …): words that look
/// like metric names but are not.
fn crate_names() -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    fn walk(dir: &Path, depth: usize, out: &mut BTreeSet<String>) -> anyhow::Result<()> {
        let manifest = dir.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("name = \"") {
                    out.insert(v.trim_end_matches('"').replace('-', "_"));
                }
            }
        }
        if depth == 0 {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if p.is_dir() && !SKIP_DIRS.contains(&name) {
                walk(&p, depth - 1, out)?;
            }
        }
        Ok(())
    }
    walk(&repo_root(), 3, &mut out)?;
    Ok(out)
}

/// `hostplug_…` words of a text.
fn metric_like_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("hostplug_") && w.len() > "hostplug_".len())
        .map(str::to_owned)
        .collect()
}

/// One CRD of deploy/crds: its names and every field under `spec` (dotted paths).
#[derive(Debug)]
struct CrdInfo {
    kind: String,
    plural: String,
    singular: String,
    short_names: Vec<String>,
    categories: Vec<String>,
    fields: Vec<String>,
}

fn crds() -> anyhow::Result<Vec<CrdInfo>> {
    fn walk(schema: &serde_yaml::Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_mapping()) {
            for (k, v) in props {
                let k = k.as_str().unwrap_or_default();
                let p = format!("{path}.{k}");
                out.push(p.clone());
                walk(v, &p, out);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, path, out);
        }
        if let Some(extra) = schema.get("additionalProperties") {
            walk(extra, path, out);
        }
    }
    let mut out = Vec::new();
    let dir = repo_root().join("deploy/crds");
    for entry in std::fs::read_dir(&dir)? {
        let p = entry?.path();
        if p.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let crd: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&p)?)?;
        let names = &crd["spec"]["names"];
        let strings = |v: &serde_yaml::Value| -> Vec<String> {
            v.as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut fields = Vec::new();
        walk(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"],
            "spec",
            &mut fields,
        );
        out.push(CrdInfo {
            kind: names["kind"].as_str().unwrap_or_default().to_owned(),
            plural: names["plural"].as_str().unwrap_or_default().to_owned(),
            singular: names["singular"].as_str().unwrap_or_default().to_owned(),
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            fields,
        });
    }
    Ok(out)
}

/// kubectl verbs whose next word is a resource (and then, maybe, a name).
const RESOURCE_VERBS: [&str; 6] = ["get", "describe", "delete", "edit", "explain", "patch"];

/// `kubectl VERB RESOURCE [NAME]` lines about our kinds that name no resource of ours, or
/// ask for one object of a category (a category lists every kind in it).
fn bad_kubectl_resources(docs: &[Doc], crds: &[CrdInfo]) -> Vec<String> {
    let mut bad = Vec::new();
    for doc in docs {
        for code in code_of(&doc.text) {
            for (line, words) in command_lines(&code) {
                if words.first().is_none_or(|w| w != "kubectl") {
                    continue;
                }
                // Flags with a value (`-n NS`) and their values are not positional.
                let mut positional = Vec::new();
                let mut skip = false;
                for w in &words[1..] {
                    if skip {
                        skip = false;
                    } else if matches!(w.as_str(), "-n" | "--namespace" | "-o" | "-l" | "--context")
                    {
                        skip = true;
                    } else if !w.starts_with('-') {
                        positional.push(w.as_str());
                    }
                }
                let [verb, resource, rest @ ..] = positional.as_slice() else {
                    continue;
                };
                if !RESOURCE_VERBS.contains(verb) || !resource.starts_with("host") {
                    continue;
                }
                let (resource, inline_name) = match resource.split_once('/') {
                    Some((r, n)) => (r, Some(n)),
                    None => (*resource, None),
                };
                let resource = resource.split('.').next().unwrap_or(resource);
                let kind = crds.iter().find(|c| {
                    c.plural == resource
                        || c.singular == resource
                        || c.kind.eq_ignore_ascii_case(resource)
                        || c.short_names.iter().any(|s| s == resource)
                });
                let category = crds
                    .iter()
                    .any(|c| c.categories.iter().any(|s| s == resource));
                let names_one = inline_name.is_some() || !rest.is_empty();
                let problem = match (kind, category) {
                    (Some(_), _) => None,
                    (None, true) if names_one && *verb != "explain" => Some(format!(
                        "{resource} is a category: `kubectl {verb} {resource} NAME` looks for NAME in every kind of it; name the kind"
                    )),
                    (None, true) => None,
                    (None, false) => Some(format!("no resource {resource} in deploy/crds")),
                };
                if let Some(problem) = problem {
                    bad.push(format!(
                        "{}:{line}: `{}`: {problem}",
                        doc.path,
                        words.join(" ")
                    ));
                }
            }
        }
    }
    bad
}

/// The text of every fenced block and inline span of the docs, for "is it mentioned".
fn all_code(docs: &[Doc]) -> String {
    docs.iter()
        .flat_map(|d| code_of(&d.text))
        .map(|c| c.text + "\n")
        .collect()
}

/// Whether `word` occurs in `text` as a whole word (letters, digits and `_` around it
/// end a word).
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !part(before) && !part(after)
    })
}

#[test]
fn docs_name_only_what_the_code_has_and_document_all_of_it() -> anyhow::Result<()> {
    let docs = docs()?;
    assert!(
        docs.iter().any(|d| d.path == "docs/operations.md")
            && docs
                .iter()
                .any(|d| d.path == "deploy/helm/hostplug/README.md"),
        "the docs were not found: {:?}",
        docs.iter().map(|d| &d.path).collect::<Vec<_>>()
    );
    let mut problems = Vec::new();

    // Command lines of our CLIs, through their own parsers.
    problems.extend(bad_command_lines(&docs));
    // Every subcommand shown at least once.
    problems.extend(
        undocumented_subcommands(&docs)
            .into_iter()
            .map(|s| format!("`{s}` is shown nowhere in the docs")),
    );

    // HOSTPLUG_* names the code does not have.
    let in_code = names_in_code()?;
    for doc in &docs {
        for (i, line) in doc.text.lines().enumerate() {
            for name in env_names(line) {
                if !in_code.contains(&name) {
                    problems.push(format!(
                        "{}:{}: {name} appears nowhere in the code",
                        doc.path,
                        i + 1
                    ));
                }
            }
        }
    }

    // The settings tables: the operator's and the console's flags and variables, the
    // worker's variables.
    let operations = docs
        .iter()
        .find(|d| d.path == "docs/operations.md")
        .map(|d| d.text.as_str())
        .unwrap_or_default();
    let settings = table_under(operations, "Operator (flags");
    problems.extend(settings_table_drift(
        &hostplug_operator::Config::command(),
        &settings,
        "docs/operations.md, Settings",
        "hostplug-operator",
    ));
    let console = std::fs::read_to_string(repo_root().join("web/README.md"))?;
    let console_rows: Vec<Vec<String>> = console
        .lines()
        .filter(|l| l.starts_with("| `--") || l.starts_with("| —"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    problems.extend(settings_table_drift(
        &hostplug_web::state::WebConfig::command(),
        &console_rows,
        "web/README.md, settings",
        "hostplug-web",
    ));
    let worker_table: String = operations
        .lines()
        .filter(|l| l.starts_with("| `HOSTPLUG_"))
        .collect::<Vec<_>>()
        .join("\n");
    for (name, _) in hostplug_api::worker::env::ALL {
        if !worker_table.contains(&format!("`{name}`")) {
            problems.push(format!(
                "docs/operations.md: the worker's {name} is not in the worker's table"
            ));
        }
    }

    // Metrics: every one the docs name exists, every one that exists is documented.
    let metrics = operator_metrics();
    assert!(metrics.len() >= 10, "the registry rendered {metrics:?}");
    let crates = crate_names()?;
    for doc in &docs {
        for (i, line) in doc.text.lines().enumerate() {
            for word in metric_like_words(line) {
                if !is_series(&word, &metrics)
                    && !crates.contains(&word)
                    && !crates.iter().any(|c| word.starts_with(&format!("{c}_")))
                {
                    problems.push(format!(
                        "{}:{}: metric {word} is not one the operator exposes",
                        doc.path,
                        i + 1
                    ));
                }
            }
        }
    }
    for name in metrics.keys() {
        if !metric_like_words(operations)
            .iter()
            .any(|w| w == name || w.strip_suffix("_total") == Some(name))
        {
            problems.push(format!(
                "docs/operations.md: metric {name} is not documented"
            ));
        }
    }

    // Resources named in kubectl command lines, and every CRD field documented.
    let crds = crds()?;
    assert!(crds.len() >= 4, "deploy/crds: {crds:?}");
    problems.extend(bad_kubectl_resources(&docs, &crds));
    let code = all_code(&docs);
    for crd in &crds {
        for field in &crd.fields {
            let leaf = field.rsplit('.').next().unwrap_or(field);
            if !has_word(&code, leaf) {
                problems.push(format!(
                    "{} {field}: the field is named in no code span or block of the docs",
                    crd.kind
                ));
            }
        }
    }

    // Every example is in the examples chapter's table, with what it needs.
    let examples = docs
        .iter()
        .find(|d| d.path == "docs/examples.md")
        .map(|d| d.text.as_str())
        .unwrap_or_default();
    for entry in std::fs::read_dir(repo_root().join("deploy/examples"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !examples.contains(&format!("`{name}`")) {
            problems.push(format!(
                "docs/examples.md: deploy/examples/{name} is not in the table"
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "the docs and the code disagree ({}):\n{}",
        problems.len(),
        problems.join("\n")
    );
    Ok(())
}

/// Each check finds a planted mistake: the test above can fail.
#[test]
fn planted_mistakes_are_found() -> anyhow::Result<()> {
    let planted = |text: &str| {
        vec![Doc {
            path: "planted.md".to_owned(),
            text: text.to_owned(),
        }]
    };
    // A wrong flag of the operator, of kubectl hostplug, of the author's CLI; a
    // subcommand that does not exist.
    for (line, wrong) in [
        ("hostplug-operator --worker-imag ghcr.io/x", "--worker-imag"),
        ("kubectl hostplug run etc-file read --node node1", "--node"),
        ("hostplug plugin run x.wasm --methd hello", "--methd"),
        ("kubectl hostplug restart my-task", "restart"),
        ("hostplug-web --listen 127.0.0.1:8443 --db ./x.db", "--db"),
    ] {
        let bad = bad_command_lines(&planted(&format!("```sh\n{line}\n```\n")));
        assert!(
            bad.len() == 1 && bad[0].contains(wrong) && bad[0].starts_with("planted.md:2:"),
            "{line}: {bad:?}"
        );
        let inline = bad_command_lines(&planted(&format!("Run `{line}` first.\n")));
        assert_eq!(inline.len(), 1, "{line} inline: {inline:?}");
    }
    // The right ones pass, continuation lines and comments included.
    let good = "```sh\nkubectl hostplug run etc-file ensure-line --target all \\\n    -p path=/etc/x -p line=y --dry-run --wait   # comment\nkubectl hostplug logs my-task --node node1\nhostplug-operator --worker-image ghcr.io/x:1\n```\n";
    assert_eq!(bad_command_lines(&planted(good)), Vec::<String>::new());

    // A category asked for one object; an unknown resource.
    let crds = crds()?;
    let bad = bad_kubectl_resources(
        &planted(
            "```sh\nkubectl get hostplug my-task\nkubectl get hosttaskz\nkubectl get hostplug\n```\n",
        ),
        &crds,
    );
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(
        bad[0].contains("is a category") && bad[1].contains("hosttaskz"),
        "{bad:?}"
    );

    // A settings table that lost a row and gained a made-up flag and variable.
    let rows = vec![
        vec![
            "`--namespace`".to_owned(),
            "`HOSTPLUG_NAMESPACE`".to_owned(),
        ],
        vec!["`--made-up`".to_owned(), "`HOSTPLUG_MADE_UP`".to_owned()],
    ];
    let drift = settings_table_drift(&hostplug_operator::Config::command(), &rows, "t", "op");
    for needle in [
        "--worker-image is not in the table",
        "HOSTPLUG_WORKER_IMAGE is not in the table",
        "names --made-up",
        "names HOSTPLUG_MADE_UP",
    ] {
        assert!(
            drift.iter().any(|d| d.contains(needle)),
            "{needle}: {drift:?}"
        );
    }

    // Metric names: a series of a real family passes, a made-up one does not.
    let metrics = operator_metrics();
    assert!(is_series("hostplug_reconciles_total", &metrics));
    assert!(!is_series("hostplug_reconcile_total", &metrics));
    assert_eq!(
        env_names("`HOSTPLUG_WEB_TLS_CERT`, `…_KEY` and HOSTPLUG_WEB_…"),
        BTreeSet::from(["HOSTPLUG_WEB_TLS_CERT".to_owned()])
    );
    Ok(())
}

/// The YAML manifests of the docs: documents with an `apiVersion` and a `kind`, with
/// where they are.
fn manifests(docs: &[Doc]) -> Vec<(String, serde_yaml::Value)> {
    let mut out = Vec::new();
    for doc in docs {
        for code in code_of(&doc.text) {
            if code.lang.as_deref() != Some("yaml") {
                continue;
            }
            for (i, document) in code.text.split("\n---").enumerate() {
                let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(document) else {
                    out.push((
                        format!("{}:{} (document {i})", doc.path, code.line),
                        serde_yaml::Value::Null,
                    ));
                    continue;
                };
                if value.get("apiVersion").is_some() && value.get("kind").is_some() {
                    out.push((format!("{}:{} (document {i})", doc.path, code.line), value));
                }
            }
        }
    }
    out
}

/// Every manifest in the docs is one the API server takes: applied server-side as a dry
/// run, as the admin, with the CRDs of deploy/crds installed (the e2e harness). A
/// namespaced object without a namespace goes to the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manifest_in_the_docs_is_accepted_by_the_api_server() -> anyhow::Result<()> {
    let docs = docs()?;
    let manifests = manifests(&docs);
    assert!(
        manifests.len() >= 5,
        "found only {} manifests",
        manifests.len()
    );
    let h = Harness::start().await?;
    let params = PatchParams::apply("hostplug-docs-test").dry_run().force();
    let mut problems = Vec::new();
    let mut namespaces = BTreeSet::new();
    for (_, value) in &manifests {
        if let Some(ns) = value["metadata"]["namespace"].as_str() {
            namespaces.insert(ns.to_owned());
        }
    }
    // Namespaces the manifests live in exist, as they would on a cluster they target.
    for ns in namespaces {
        h.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
        ))
        .await?;
    }
    for (at, value) in &manifests {
        if value.is_null() {
            problems.push(format!("{at}: not YAML"));
            continue;
        }
        let outcome: anyhow::Result<()> = async {
            let object: DynamicObject = serde_yaml::from_value(value.clone())?;
            let types = object.types.clone().context("no apiVersion and kind")?;
            let gvk = GroupVersionKind::try_from(&types)?;
            let name = object.metadata.name.clone().context("no metadata.name")?;
            let (resource, caps) = discovery::pinned_kind(&h.admin, &gvk).await?;
            let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
                let ns = object.metadata.namespace.as_deref().unwrap_or(NAMESPACE);
                Api::namespaced_with(h.admin.clone(), ns, &resource)
            } else {
                Api::all_with(h.admin.clone(), &resource)
            };
            api.patch(&name, &params, &Patch::Apply(&object)).await?;
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            problems.push(format!("{at}: {e:#}"));
        }
    }
    eprintln!(
        "{} manifests in the docs applied as a dry run",
        manifests.len()
    );
    assert!(
        problems.is_empty(),
        "manifests in the docs the API server refuses:\n{}",
        problems.join("\n")
    );
    h.shutdown().await?;
    Ok(())
}
