//! The plugin catalog: every HostPlugin with its capabilities, methods and the parameter
//! table of each method (from its JSON Schema).

use axum::{extract::State, response::Response};

use super::render;
use crate::{
    auth::AuthUser,
    error::AppResult,
    schema,
    state::AppState,
    templates::{MethodCard, Nav, PluginCard, PluginsPage},
};

/// `GET /plugins`.
pub async fn plugins(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    let plugins = state.cluster.list_plugins().await?;
    let cards = plugins
        .into_iter()
        .map(|plugin| PluginCard {
            methods: plugin
                .methods
                .iter()
                .map(|m| MethodCard {
                    name: m.name.clone(),
                    description: m.description.clone(),
                    mutates: m.mutates,
                    rows: schema::param_rows(&m.params_schema),
                })
                .collect(),
            plugin,
        })
        .collect();
    render(&PluginsPage {
        nav: Nav::for_user(&user, "plugins"),
        plugins: cards,
    })
}
