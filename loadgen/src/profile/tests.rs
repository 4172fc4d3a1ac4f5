//! Profiles: the committed ones read, and every kind of mistake is named by file, field and what
//! was expected.

use std::path::{Path, PathBuf};

use super::*;
use crate::profile::sections::{CursorRule, Frames};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A minimal valid profile with `extra` appended.
fn with(extra: &str) -> Result<Profile, ProfileError> {
    let text = format!(
        "name = \"t\"\nbase_url = \"http://127.0.0.1:9\"\n[publish]\nurl = \"/p/{{topic}}\"\n{extra}\n"
    );
    Profile::from_toml(&text, "x.toml", Path::new("."))
}

fn error(extra: &str) -> String {
    with(extra).unwrap_err().to_string()
}

#[test]
fn the_committed_profiles_read() {
    let commbench = Profile::load(&repo("targets/commbench.toml")).unwrap();
    assert_eq!(commbench.name, "commbench");
    for pattern in [
        Pattern::RequestResponse,
        Pattern::ShortPoll,
        Pattern::LongPoll,
        Pattern::Sse,
        Pattern::Ws,
        Pattern::SocketIo,
        Pattern::GraphqlSub,
    ] {
        assert!(commbench.spec(pattern).is_some(), "{pattern}");
        assert_eq!(
            commbench.stamps(pattern),
            pattern != Pattern::RequestResponse
        );
    }
    let node = Profile::load(&repo("peers/node/profile.toml")).unwrap();
    assert_eq!(node.name, "node");
    assert!(node.start.as_ref().unwrap().cwd.ends_with("peers/node"));
    let Some(PatternSpec::Poll(poll)) = node.spec(Pattern::ShortPoll) else {
        panic!("no short-poll");
    };
    assert!(matches!(&poll.cursor, CursorRule::Json(p) if p.to_string() == "/events/-1/seq"));
    let Some(PatternSpec::WebSocket(ws)) = node.spec(Pattern::Ws) else {
        panic!("no ws");
    };
    assert_eq!(ws.frames, Frames::Text);
    assert!(ws.subscribe.is_none());
    assert!(node.spec(Pattern::GraphqlSub).is_none());
    // Every feed pattern of commbench's own server resumes after its cursor.
    let Some(PatternSpec::WebSocket(ws)) = commbench.spec(Pattern::Ws) else {
        panic!("no ws");
    };
    let resume = ws.resume.as_ref().unwrap();
    assert_eq!(resume.cursor.to_string(), "/seq");
    assert!(resume.with.url.is_none() && resume.with.subscribe.is_some());
    let Some(PatternSpec::SocketIo(socketio)) = commbench.spec(Pattern::SocketIo) else {
        panic!("no socketio");
    };
    assert_eq!(
        socketio.resume.as_ref().unwrap().cursor.to_string(),
        "/0/seq"
    );
    let Some(PatternSpec::GraphqlSub(graphql)) = commbench.spec(Pattern::GraphqlSub) else {
        panic!("no graphql-sub");
    };
    assert!(graphql.resume.is_some());
}

#[test]
fn a_missing_file_or_bad_toml_names_the_file() {
    let err = Profile::load(Path::new("/nonexistent/p.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/p.toml"), "{err}");
    let err = Profile::from_toml("name = ", "bad.toml", Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("target profile bad.toml is not valid"),
        "{err}"
    );
}

#[test]
fn each_mistake_names_the_field_and_what_was_expected() {
    let cases = [
        ("[patterns.sse]\nurl = \"/s/{topic}\"\nretries = 3", "unknown field `retries`"),
        ("[patterns.carrier-pigeon]\nurl = \"/\"", "unknown pattern `carrier-pigeon`"),
        ("[patterns.graphql-poll]\nurl = \"/\"", "graphql-poll is not driven from a profile"),
        ("[patterns.sse]\nurl = \"sse/{topic}\"", "`patterns.sse.url`: `sse/{topic}` must be a path"),
        ("[patterns.sse]\nurl = \"/sse/{topc}\"", "`patterns.sse.url`: unknown placeholder `{topc}`"),
        (
            "[patterns.short-poll]\nurl = \"/p/{topic}?after={cursor}\"\ncursor = \"body\"",
            "`patterns.short-poll.cursor`: `body`: expected `none`, `json:/pointer`",
        ),
        (
            "[patterns.short-poll]\nurl = \"/p/{topic}?after={cursor}\"",
            "`patterns.short-poll.cursor`: the URL asks for `{cursor}` but `cursor` is `none`",
        ),
        (
            "[patterns.short-poll]\nurl = \"/p/{topic}?t={timeout_ms}\"",
            "unknown placeholder `{timeout_ms}`",
        ),
        (
            "[patterns.ws]\nurl = \"/ws\"\nframes = \"txt\"",
            "`patterns.ws.frames`: `txt`: expected text, binary or any",
        ),
        (
            "[patterns.socketio]\nevent = \"e\"\nsubscribe_event = \"s\"\nsubscribe_args = ['{\"topic\":{topic}']",
            "`patterns.socketio.subscribe_args`",
        ),
        ("[patterns.socketio]\nsubscribe_event = \"s\"", "missing field `event`"),
        (
            "[patterns.graphql-sub]\nurl = \"/g\"\nsubscription = \"query { x }\"",
            "`patterns.graphql-sub.subscription`: expected a GraphQL subscription",
        ),
        (
            "[patterns.ws]\nurl = \"/ws\"\ncursor = \"json:/seq\"",
            "`patterns.ws.cursor`: says where events carry the target's cursor, but no `resume`",
        ),
        (
            "[patterns.ws]\nurl = \"/ws\"\nresume = \"{cursor}\"",
            "`patterns.ws.resume`: needs `cursor`",
        ),
        (
            "[patterns.ws]\nurl = \"/ws\"\ncursor = \"json:/seq\"\nresume_url = \"/ws?t={topic}\"",
            "`patterns.ws.resume`: never asks for `{cursor}`",
        ),
        (
            "[patterns.ws]\nurl = \"/ws\"\ncursor = \"seq\"\nresume = \"{cursor}\"",
            "`patterns.ws.cursor`: `seq`: expected `json:/pointer`",
        ),
        (
            "[patterns.ws]\nurl = \"/ws\"\ncursor = \"json:/seq\"\nresume_url = \"ws?a={cursor}\"",
            "`patterns.ws.resume_url`: `ws?a={cursor}` must be a path",
        ),
        (
            "[patterns.socketio]\nevent = \"e\"\nsubscribe_event = \"s\"\ncursor = \"json:/0/seq\"\nresume_args = ['{\"after\":{cursor}']",
            "`patterns.socketio.resume_args`",
        ),
        (
            "[patterns.socketio]\nevent = \"e\"\ncursor = \"json:/0/seq\"\nresume_args = ['{cursor}']",
            "`patterns.socketio.resume_args`: given without a `subscribe_event`",
        ),
        (
            "[patterns.graphql-sub]\nurl = \"/g\"\nsubscription = \"subscription { x }\"\ncursor = \"json:/x\"\nresume_variables = '[{cursor}]'",
            "`patterns.graphql-sub.resume_variables`: `[{cursor}]` is not a JSON object",
        ),
        ("", "`patterns`: describe at least one pattern"),
    ];
    for (extra, expected) in cases {
        let err = error(extra);
        assert!(err.starts_with("target profile x.toml"), "{err}");
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
}

#[test]
fn publish_start_and_base_url_are_checked() {
    let sse = "[patterns.sse]\nurl = \"/s/{topic}\"";
    let text = |head: &str| format!("name = \"t\"\n{head}\n{sse}\n");
    let check = |head: &str| {
        Profile::from_toml(&text(head), "p.toml", Path::new("."))
            .unwrap_err()
            .to_string()
    };
    let err = check("[publish]\nurl = \"/p\"");
    assert!(err.contains("`base_url`: say where the server is"), "{err}");
    let err = check("base_url = \"https://x:1\"");
    assert!(err.contains("`base_url`") && err.contains("TLS"), "{err}");
    let err = check("base_url = \"http://x:1\"\n[publish]\nurl = \"/p/{topic}\"\nbody = \"hi\"");
    assert!(
        err.contains("`publish.body`: the body must carry `{payload}`"),
        "{err}"
    );
    let err = check("base_url = \"http://x:1\"\n[publish]\nurl = \"/p\"\nconnections = 0");
    assert!(
        err.contains("`publish.connections`: 0 is out of range"),
        "{err}"
    );
    let err = check("base_url = \"http://x:1\"\n[publish]\nws = \"/ws\"");
    assert!(err.contains("`publish.message`"), "{err}");
    let err = check("base_url = \"http://127.0.0.1:{port}\"");
    assert!(err.contains("`base_url`: `{port}` is a port"), "{err}");
    let err = check("[start]\ncommand = [\"srv\"]");
    assert!(
        err.contains("`start.ready_line`: say how the server shows it is ready"),
        "{err}"
    );
    let err = check("[start]\ncommand = [\"srv\"]\nready_line = \"up\"\nstop_signal = \"SIGSTOP\"");
    assert!(err.contains("`start.stop_signal`: `SIGSTOP`"), "{err}");
    let err = check("[start]\ncommand = [\"srv\", \"{port}\"]\nready_line = \"up {base_url}\"\nstop_grace = \"forever\"");
    assert!(err.contains("`start.stop_grace`"), "{err}");
    // A readiness line that announces the URL needs no base_url; {port} fills command and env.
    let ok = Profile::from_toml(
        &text("[start]\ncommand = [\"srv\", \"--port={port}\"]\nenv = { P = \"{port}\" }\nready_line = \"up {base_url}\""),
        "p.toml",
        Path::new("."),
    )
    .unwrap();
    assert!(ok.publish.is_none() && !ok.stamps(Pattern::Sse));
}

#[test]
fn a_start_command_that_is_not_installed_says_how_to_install_it() {
    let profile = Profile::from_toml(
        "name = \"t\"\n[start]\ncommand = [\"no-such-program-cb\"]\nready_line = \"{base_url}\"\n\
         install = \"scripts/install-it.sh\"\n[patterns.sse]\nurl = \"/s\"\n",
        "p.toml",
        Path::new("."),
    )
    .unwrap();
    let missing = profile.missing().unwrap();
    assert!(
        missing.contains("`no-such-program-cb` is not installed")
            && missing.contains("scripts/install-it.sh"),
        "{missing}"
    );
    let node = Profile::load(&repo("peers/node/profile.toml")).unwrap();
    let mut start = node.start.clone().unwrap();
    start.requires = vec![PathBuf::from("node_modules/no-such-package")];
    if let Some(missing) = start.missing() {
        assert!(
            missing.contains("no-such-package") || missing.contains("`node`"),
            "{missing}"
        );
    }
}

#[test]
fn ad_hoc_profiles_follow_the_target_url() {
    let profile = Profile::ad_hoc("http://127.0.0.1:3000/events?x=1", Some("hi")).unwrap();
    assert_eq!(profile.name, "external");
    assert!(!profile.stamps(Pattern::SseUrl));
    let Some(PatternSpec::Sse(sse)) = profile.spec(Pattern::SseUrl) else {
        panic!("no sse-url");
    };
    // The target URL itself: an empty path under it.
    assert_eq!(sse.url.to_string(), "");
    assert_eq!(
        profile
            .base_url
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("http://127.0.0.1:3000/events?x=1")
    );
    let Some(PatternSpec::WebSocket(ws)) = profile.spec(Pattern::WsUrl) else {
        panic!("no ws-url");
    };
    assert_eq!(
        ws.subscribe.as_ref().map(ToString::to_string).as_deref(),
        Some("hi")
    );
}
