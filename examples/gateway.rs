//! A small LLM gateway on stowage: every call is metered against three budgets at once — the API
//! key's, its team's and its organisation's — and can never push any of them over a hard limit,
//! however many calls run at the same time, nor be counted twice when a client retries it.
//!
//! `POST /v1/complete {"key","team","org","max_tokens","request_id"}`:
//! 1. `reserve_all` the most the call can cost (`max_tokens` tokens and `max_tokens × price`
//!    micro-dollars) on `key:…`, `team:…` and `org:…`, under the id `request_id` — all three or
//!    none; a hard limit answers 429 with the breaches;
//! 2. call the (fake) model;
//! 3. `commit_all` what it really cost (at most the reserved amounts) and answer 200 with the
//!    usage; if the model failed, `release_all` the holds and answer 502.
//!
//! A retry with the same `request_id` replays: the reservation and the commit answer what they
//! answered the first time and apply nothing again. A gateway that dies between 1 and 3 leaves
//! holds that stop counting when their TTL passes.
//!
//! Run: `cargo run --example gateway [URL]` (or `GATEWAY_URL=…`; default `sqlite://gateway.db`),
//! listening on `GATEWAY_ADDR` (default `127.0.0.1:8080`). Amounts are integers throughout:
//! tokens and micro-dollars, never floats.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use stowage::{
    Backend, BudgetPolicy, DimensionLimit, Error, ErrorKind, MultiOutcome, MultiReserveOutcome,
    ReserveRequest, Window,
};

/// The model's price: micro-dollars per token.
pub const PRICE_MICROS_PER_TOKEN: u64 = 2;
/// How long a hold lives if the gateway never commits nor releases it.
pub const HOLD_TTL_MS: u64 = 60_000;

/// The example budgets set at start: (budget, soft tokens, hard tokens, hard micro-dollars),
/// counted per calendar month (UTC).
pub const BUDGETS: &[(&str, u64, u64, u64)] = &[
    ("key:demo", 8_000, 10_000, 20_000),
    ("team:research", 40_000, 50_000, 100_000),
    ("org:acme", 400_000, 500_000, 1_000_000),
];

/// Sets the policies of [`BUDGETS`] (harmless to repeat: it replaces them, counters stay).
pub async fn setup(store: &dyn Backend) -> stowage::Result<()> {
    for (budget, soft_tokens, hard_tokens, hard_micros) in BUDGETS {
        let policy = BudgetPolicy::new()
            .limit("tokens", DimensionLimit::both(*soft_tokens, *hard_tokens))
            .limit("usd_micros", DimensionLimit::hard(*hard_micros))
            .window(Window::month("UTC"));
        store.set_policy(budget, &policy).await?;
    }
    Ok(())
}

/// The body of `POST /v1/complete`.
#[derive(Debug, Deserialize)]
pub struct Complete {
    /// The API key.
    pub key: String,
    /// The key's team.
    pub team: String,
    /// The team's organisation.
    pub org: String,
    /// The most tokens the completion may use.
    pub max_tokens: u64,
    /// The client's id for this call; a retry reuses it.
    pub request_id: String,
    /// Makes the fake model fail (to see the holds released).
    #[serde(default)]
    pub fail: bool,
}

/// The fake model: deterministic, it uses three quarters of `max_tokens` (rounded up), so a retry
/// costs exactly what the first attempt did and never more than was reserved.
fn fake_model(call: &Complete) -> Result<u64, &'static str> {
    if call.fail {
        return Err("the model is unavailable");
    }
    Ok(call.max_tokens - call.max_tokens / 4)
}

/// tokens and micro-dollars for `tokens` tokens; `None` when the price overflows.
fn cost(tokens: u64) -> Option<BTreeMap<String, u64>> {
    let micros = tokens.checked_mul(PRICE_MICROS_PER_TOKEN)?;
    Some(BTreeMap::from([
        ("tokens".to_owned(), tokens),
        ("usd_micros".to_owned(), micros),
    ]))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// An error of the store as an HTTP answer.
fn failure(e: &Error) -> Response {
    let status = match e.kind() {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        // The request id was used for another request, or the call was released before.
        ErrorKind::Conflict => StatusCode::CONFLICT,
        // The hold expired before the commit: the call took longer than HOLD_TTL_MS.
        ErrorKind::Expired => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    answer(
        status,
        json!({"error": e.to_string(), "kind": e.kind().to_string()}),
    )
}

async fn complete(State(store): State<Arc<dyn Backend>>, Json(call): Json<Complete>) -> Response {
    let Some(most) = cost(call.max_tokens) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "max_tokens is too large"}),
        );
    };
    let (key, team, org) = (
        format!("key:{}", call.key),
        format!("team:{}", call.team),
        format!("org:{}", call.org),
    );
    let budgets = [key.as_str(), team.as_str(), org.as_str()];
    let id = call.request_id.as_str();

    // 1. Hold the most the call can cost on all three budgets, or on none.
    let request = ReserveRequest {
        id: id.to_owned(),
        dimensions: most,
        ttl_ms: HOLD_TTL_MS,
    };
    let reserved = match store.reserve_all(&budgets, &request).await {
        Ok(receipt) => receipt,
        Err(e) => return failure(&e),
    };
    if let MultiReserveOutcome::HardBreach(breaches) = reserved.outcome {
        return answer(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "budget exceeded", "request_id": id, "breaches": breaches}),
        );
    }

    // 2. The work.
    let tokens = match fake_model(&call) {
        Ok(tokens) => tokens,
        Err(why) => {
            // Nothing to bill: free the holds now rather than when their TTL passes.
            if let Err(e) = store.release_all(&budgets, id).await {
                return failure(&e);
            }
            return answer(
                StatusCode::BAD_GATEWAY,
                json!({"error": why, "request_id": id}),
            );
        }
    };

    // 3. Bill what it really cost; the holds are freed in the same step.
    let Some(actual) = cost(tokens) else {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "cost overflow"}),
        );
    };
    let committed = match store.commit_all(&budgets, id, &actual).await {
        Ok(receipt) => receipt,
        Err(e) => return failure(&e),
    };
    let soft_breaches = match committed.outcome {
        MultiOutcome::SoftBreach(breaches) => json!(breaches),
        MultiOutcome::Ok | MultiOutcome::HardBreach(_) => json!({}),
    };
    answer(
        StatusCode::OK,
        json!({
            "request_id": id,
            "completion": format!("({tokens} tokens of fake completion)"),
            "usage": actual,
            "replayed": committed.replayed,
            "soft_breaches": soft_breaches,
        }),
    )
}

/// The gateway's routes over `store`.
pub fn router(store: Arc<dyn Backend>) -> Router {
    Router::new()
        .route("/v1/complete", post(complete))
        .with_state(store)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("GATEWAY_URL").ok())
        .unwrap_or_else(|| "sqlite://gateway.db".to_owned());
    let addr = std::env::var("GATEWAY_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let store = stowage::connect(&url).await?;
    setup(store.as_ref()).await?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("gateway on http://{addr} over {url}");
    axum::serve(listener, router(store)).await?;
    Ok(())
}
