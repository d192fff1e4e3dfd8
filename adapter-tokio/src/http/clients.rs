//! `GET /api/v1/clients` (who is online, paged) and `GET /api/v1/clients/{id}` (one client
//! and its subscriptions), read off the server's [`Presence`](crate::presence::Presence).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Api, error};
use crate::presence::Online;

/// The page size without `?limit=`.
pub const DEFAULT_PAGE: usize = 100;

/// The largest `?limit=`.
pub const MAX_PAGE: usize = 1000;

/// The query of `/api/v1/clients`.
#[derive(Debug, Deserialize)]
pub(super) struct ClientsQuery {
    /// How many clients at most, 1 to [`MAX_PAGE`].
    limit: Option<String>,
    /// The cursor: the `next` of the previous page (a client id; the page starts after it).
    after: Option<String>,
}

/// One client as the API shows it.
#[derive(Debug, Serialize)]
struct ClientView<'a> {
    client_id: &'a str,
    username: Option<&'a str>,
    peer: &'a str,
    proto_ver: u8,
    connected_at: u64,
    session_seq: Option<u64>,
    subscriptions: usize,
    last_activity: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    topics: Option<Vec<TopicView>>,
}

/// A page of `/api/v1/clients`.
#[derive(Debug, Serialize)]
struct Page<'a> {
    clients: Vec<ClientView<'a>>,
    /// The `after` of the next page; `None` on the last one.
    next: Option<String>,
}

/// One subscription of a client.
#[derive(Debug, Serialize)]
struct TopicView {
    topic: String,
    qos: u8,
}

impl<'a> ClientView<'a> {
    fn of(online: &'a Online, with_topics: bool) -> ClientView<'a> {
        ClientView {
            client_id: &online.client_id,
            username: online.username.as_deref(),
            peer: &online.peer,
            proto_ver: online.proto_ver,
            connected_at: online.connected_at(),
            session_seq: online.session_seq(),
            subscriptions: online.subscriptions(),
            last_activity: online.last_activity(),
            topics: with_topics.then(|| {
                online
                    .topic_list()
                    .into_iter()
                    .map(|(topic, qos)| TopicView { topic, qos })
                    .collect()
            }),
        }
    }
}

/// `GET /api/v1/clients`: `{"clients": [...], "next": cursor or null}`, in client-id order.
pub(super) async fn list(
    State(api): State<Arc<Api>>,
    query: Result<Query<ClientsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query string");
    };
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            let message = format!("limit must be a number from 1 to {MAX_PAGE}");
            return error(StatusCode::BAD_REQUEST, &message);
        }
    };
    let (page, next) = api.presence.page(query.after.as_deref(), limit);
    let clients: Vec<ClientView<'_>> = page.iter().map(|o| ClientView::of(o, false)).collect();
    Json(Page { clients, next }).into_response()
}

/// `GET /api/v1/clients/{id}`: the client with its `topics`; 404 when it is not connected.
pub(super) async fn one(State(api): State<Arc<Api>>, Path(client_id): Path<String>) -> Response {
    match api.presence.get(&client_id) {
        Some(online) => Json(ClientView::of(&online, true)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no client with this id is connected"),
    }
}
