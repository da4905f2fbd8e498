//! hello: the smallest adapter worth running, written with busbar's adapter kit. It does what
//! Powerstrip's reference adapter, powerstrip-slowreq, did: wait a while (1 s by default), then
//! pass the call on unchanged, on pre-hooks and post-hooks alike. So a `docker run` through a
//! chain that names it takes visibly longer, and nothing else changes. Each call is printed,
//! with the node that ran it when busbar says so and the request's W3C trace id
//! (`trace_id=...`, from the `traceparent` busbar sends), so `grep TRACE_ID` over busbar's
//! logs and this adapter's output shows one request's whole path.
//!
//!     cargo run -p busbar-adapter --example hello -- --listen 127.0.0.1:8080 --delay-ms 1000
//!
//! and in `adapters.yml`:
//!
//!     endpoints:
//!       "POST /*/containers/create":
//!         pre: [hello]
//!     adapters:
//!       hello: http://127.0.0.1:8080/hello
//!
//! It speaks protocol versions 1 and 2: the kit gives a v2 call (`protocol: 2` in the chain) to
//! `pre_hook` and `post_hook` through the default `pre_hook_v2` and `post_hook_v2`, and
//! `unwind` (the request failed after this pre-hook) has nothing to undo, so it only says so.
//!
//! `examples/hello.py` is the same adapter in Python with the standard library only; both are
//! tested by `tests/hello.rs` and pass `busbarctl adapter test` (`--protocol 1` and `2`).

use std::time::Duration;

use busbar_adapter::hook::{Call, PostAnswer, PreAnswer};
use busbar_adapter::server::{serve, Options};
use busbar_adapter::v1::{PostHookRequest, PreHookRequest};
use busbar_adapter::v2::UnwindRequest;
use busbar_adapter::Adapter;

/// Waits `delay`, then passes every call on unchanged.
pub struct Hello {
    pub delay: Duration,
}

impl Adapter for Hello {
    async fn pre_hook(&self, call: Call<PreHookRequest>) -> PreAnswer {
        let c = &call.request.client_request;
        println!(
            "hello: pre-hook {} {} on {}{}",
            c.method,
            c.request,
            call.node().unwrap_or("this host"),
            trace_of(&call)
        );
        tokio::time::sleep(self.delay).await;
        Ok(call.unchanged())
    }

    async fn post_hook(&self, call: Call<PostHookRequest>) -> PostAnswer {
        let (c, s) = (&call.request.client_request, &call.request.server_response);
        println!(
            "hello: post-hook {} {} answered {}{}",
            c.method,
            c.request,
            s.code,
            trace_of(&call)
        );
        tokio::time::sleep(self.delay).await;
        Ok(call.unchanged())
    }

    async fn unwind(&self, call: Call<UnwindRequest>) {
        let (c, f) = (&call.request.client_request, &call.request.failure);
        println!(
            "hello: unwind {} {}: failed with {} at the {:?}; nothing to undo{}",
            c.method,
            c.request,
            f.code,
            f.stage,
            trace_of(&call)
        );
    }
}

/// ` trace_id=...` for a printed line, or nothing when the call carried no valid trace.
fn trace_of<R>(call: &Call<R>) -> String {
    call.context
        .trace
        .as_ref()
        .map(|t| format!(" trace_id={}", t.trace_id))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut listen, mut delay_ms) = ("127.0.0.1:8080".to_owned(), 1000u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            ("--delay-ms", Some(v)) => delay_ms = v.parse()?,
            _ => return Err("usage: hello [--listen IP:PORT] [--delay-ms N]".into()),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "hello: listening on http://{}/hello",
        listener.local_addr()?
    );
    let options = Options::default();
    let shutdown = options.shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    });
    let hello = Hello {
        delay: Duration::from_millis(delay_ms),
    };
    serve(listener, hello, options).await;
    Ok(())
}
