//! The LLM gateway example (`examples/gateway.rs`) served on a loopback port over `memory://`.

#[allow(dead_code)]
#[path = "../examples/gateway.rs"]
mod gateway;

use serde_json::{json, Value};
use stowage::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Posts `body` to `/v1/complete` over plain HTTP/1.1; answers the status and the JSON body.
async fn post(addr: std::net::SocketAddr, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/complete HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn call(request_id: &str, max_tokens: u64) -> Value {
    json!({"key": "demo", "team": "research", "org": "acme",
           "max_tokens": max_tokens, "request_id": request_id})
}

async fn start() -> (std::net::SocketAddr, std::sync::Arc<dyn Backend>) {
    let store = stowage::connect("memory://").await.unwrap();
    gateway::setup(store.as_ref()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = gateway::router(store.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_fit_the_third_is_refused_and_a_retry_is_not_counted_twice() {
    let (addr, store) = start().await;
    // key:demo allows 10 000 tokens; each call holds 4 500 and uses 3 375.
    let (status, first) = post(addr, &call("req-1", 4_500)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["usage"],
        json!({"tokens": 3_375, "usd_micros": 6_750})
    );
    assert_eq!(first["replayed"], false);
    // The client retries req-1 (say its connection dropped): same answer, nothing counted again.
    let (status, retry) = post(addr, &call("req-1", 4_500)).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["usage"], first["usage"]);
    assert_eq!(retry["replayed"], true);
    let (status, second) = post(addr, &call("req-2", 4_500)).await;
    assert_eq!(status, 200, "{second}");
    for budget in ["key:demo", "team:research", "org:acme"] {
        let usage = store.usage(budget).await.unwrap();
        assert_eq!(usage.counters["tokens"], 6_750, "{budget}");
        assert_eq!(usage.counters["usd_micros"], 13_500, "{budget}");
        assert!(usage.pending.is_empty(), "{budget}");
    }
    // 6 750 used + 4 500 held > 10 000 on the key: refused, held nowhere.
    let (status, third) = post(addr, &call("req-3", 4_500)).await;
    assert_eq!(status, 429, "{third}");
    let breach = &third["breaches"]["key:demo"][0];
    assert_eq!(
        (&breach["dimension"], &breach["usage"], &breach["limit"]),
        (&json!("tokens"), &json!(6_750), &json!(10_000))
    );
    assert!(third["breaches"].get("team:research").is_none(), "{third}");
    for budget in ["key:demo", "team:research", "org:acme"] {
        let usage = store.usage(budget).await.unwrap();
        assert_eq!(usage.counters["tokens"], 6_750, "{budget}");
        assert!(usage.pending.is_empty(), "{budget}");
    }
    // A smaller call still fits.
    let (status, small) = post(addr, &call("req-4", 1_000)).await;
    assert_eq!(status, 200, "{small}");
    assert_eq!(
        store.usage("key:demo").await.unwrap().counters["tokens"],
        7_500
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_releases_its_holds_and_bad_input_is_400() {
    let (addr, store) = start().await;
    let mut failing = call("req-f", 4_000);
    failing["fail"] = json!(true);
    let (status, body) = post(addr, &failing).await;
    assert_eq!(status, 502, "{body}");
    for budget in ["key:demo", "team:research", "org:acme"] {
        let usage = store.usage(budget).await.unwrap();
        assert!(
            usage.counters.is_empty() && usage.pending.is_empty(),
            "{budget}"
        );
        let held = store.reservation(budget, "req-f").await.unwrap().unwrap();
        assert!(matches!(
            held.state,
            stowage::ReservationState::Released { .. }
        ));
    }
    // max_tokens whose price overflows, an empty request id.
    let (status, _) = post(addr, &call("req-x", u64::MAX)).await;
    assert_eq!(status, 400);
    let (status, _) = post(addr, &call("", 10)).await;
    assert_eq!(status, 400);
}
