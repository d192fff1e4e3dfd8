//! The credential check of CONNECT ([`adapter_embassy::Auth`]), with raw clients on a second
//! embassy-net stack.

mod common;

use activity_core::QoS;
use activity_core::codec::Connect;
use adapter_embassy::{Auth, Config, User};
use embassy_net::Stack;

use common::*;

const USERS: &[User<'static>] = &[
    User {
        username: "alice",
        password: b"secret",
    },
    User {
        username: "monitor",
        password: b"watch",
    },
];

fn config(allow_anonymous: bool) -> Config<'static> {
    Config {
        system_subscribers: &["monitor"],
        auth: Some(Auth {
            users: USERS,
            allow_anonymous,
        }),
        ..Config::new("gw-auth")
    }
}

fn login<'a>(client_id: &'a str, username: &'a str, password: Option<&'a [u8]>) -> Connect<'a> {
    Connect {
        username: Some(username),
        password,
        ..connect(client_id)
    }
}

/// Connects with `connect` and returns the CONNACK code; a refused client is closed.
async fn connack(stack: Stack<'static>, connect: Connect<'_>) -> u8 {
    let mut client = RawClient::open(stack, GATEWAY).await;
    let (session_present, code) = client.connect_with(connect).await;
    assert!(!session_present);
    if code == 0 {
        client.close().await;
    } else {
        client.expect_closed().await;
    }
    code
}

#[test]
fn wrong_credentials_get_connack_4_and_anonymous_clients_connack_5() {
    gateway_test::<4, _, _>(config(false), |stack, handle| async move {
        let mut monitor = RawClient::open(stack, GATEWAY).await;
        let ack = monitor
            .connect_with(login("monitor", "monitor", Some(b"watch")))
            .await;
        assert_eq!(ack, (false, 0));
        assert_eq!(monitor.subscribe(1, "SYSTEM/#", QoS::AtLeastOnce).await, 1);
        let _ = monitor.event("subscription/subscribed").await;

        assert_eq!(connack(stack, connect("anon")).await, 5, "no username");
        let wrong = login("dev", "alice", Some(b"secrets"));
        assert_eq!(connack(stack, wrong).await, 4, "wrong password");
        let other = login("dev", "alice", Some(b"watch"));
        assert_eq!(connack(stack, other).await, 4, "another user's password");
        assert_eq!(
            connack(stack, login("dev", "alice", None)).await,
            4,
            "no password"
        );
        let unknown = login("dev", "mallory", Some(b"secret"));
        assert_eq!(connack(stack, unknown).await, 4, "unknown user");
        let stats = handle.stats();
        assert_eq!((stats.refused_auth, stats.clients_connected), (5, 1));

        // Each refused CONNECT made a `refused` event, in order; then alice's `connected`.
        let refusals = [
            ("anon", None, 5),
            ("dev", Some("alice"), 4),
            ("dev", Some("alice"), 4),
            ("dev", Some("alice"), 4),
            ("dev", Some("mallory"), 4),
        ];
        for (client_id, username, code) in refusals {
            let refused = monitor.event("presence/refused").await;
            assert_eq!(
                (
                    &refused["client_id"],
                    &refused["username"],
                    &refused["reason_code"]
                ),
                (
                    &serde_json::json!(client_id),
                    &username.map_or(serde_json::Value::Null, |u| serde_json::json!(u)),
                    &serde_json::json!(code)
                ),
                "{refused}"
            );
        }
        assert_eq!(
            connack(stack, login("dev", "alice", Some(b"secret"))).await,
            0
        );
        let connected = monitor.event("presence/connected").await;
        assert_eq!(
            (&connected["client_id"], &connected["username"]),
            (&serde_json::json!("dev"), &serde_json::json!("alice"))
        );
        monitor.close().await;
    });
}

#[test]
fn without_auth_nothing_is_checked() {
    let config = Config::new("gw-open");
    gateway_test::<4, _, _>(config, |stack, handle| async move {
        assert_eq!(connack(stack, connect("anon")).await, 0);
        let any = login("dev", "whoever", Some(b"anything"));
        assert_eq!(connack(stack, any).await, 0);
        assert_eq!(handle.stats().refused_auth, 0);
    });
}
