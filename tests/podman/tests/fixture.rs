//! The fixture itself: the service answers, images can be made and pushed, and stopping
//! leaves no process and no directory behind.

use hostplug_podman::DockerEnv;

#[test]
fn starts_makes_pushes_and_cleans_up() {
    let env = DockerEnv::start().expect("start");
    let ping = env.request("GET", "/_ping").expect("ping");
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    let id = env
        .make_image("localhost/fixture:1", &[("hostplug.test", "yes")])
        .expect("image");
    assert_eq!(
        env.image_id("localhost/fixture:1").expect("inspect"),
        Some(id.clone())
    );
    assert_eq!(env.image_id("localhost/missing:1").expect("inspect"), None);
    let pushed = env.push("localhost/fixture:1", "fixture:1").expect("push");
    assert!(pushed.starts_with(env.registry()), "{pushed}");
    let list = env.request("GET", "/images/json").expect("list");
    assert!(list.body.contains(&id), "{}", list.body);
    let dir = env.dir().to_path_buf();
    env.stop().expect("stop");
    assert!(!dir.exists(), "{} is left behind", dir.display());
}
