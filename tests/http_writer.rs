//! Between the pages and the writer: user actions (rename, notes) reach the writer as
//! commands and wait for its answer; refused ones send nothing; commits come back to
//! open tabs as `/events` ticks, and shutdown closes those streams.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use netmon::event::Tick;
use netmon::event::{Command, CommandReply, Event};
use tokio_stream::StreamExt as _;
use tower::ServiceExt as _;

use common::http::*;

#[tokio::test]
async fn rename_goes_through_the_writer_and_redirects() {
    let fx = fixture();
    let Fixture { app, writer_rx, .. } = fx;
    let writer = std::thread::spawn(move || {
        let event = writer_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a command");
        match event {
            Event::Command(Command::RenameDevice { device_id, name }, reply) => {
                reply.send(Ok(CommandReply::Done)).unwrap();
                (device_id, name)
            }
            other => panic!("unexpected {other:?}"),
        }
    });
    let csrf = open_csrf(&app).await;
    let request = Request::post("/devices/1/name")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(format!(
            "name=%20Kid%27s+%3Ctablet%3E%20&csrf={csrf}"
        )))
        .unwrap();
    let (status, headers, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/devices/1");
    assert_eq!(writer.join().unwrap(), (1, "Kid's <tablet>".to_owned()));
}

#[tokio::test]
async fn notes_go_through_the_writer_and_bad_ones_do_not() {
    let fx = fixture();
    let Fixture { app, writer_rx, .. } = fx;
    let writer = std::thread::spawn(move || {
        let event = writer_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a command");
        let got = match event {
            Event::Command(Command::SetDeviceNotes { device_id, notes }, reply) => {
                reply.send(Ok(CommandReply::Done)).unwrap();
                (device_id, notes)
            }
            other => panic!("unexpected {other:?}"),
        };
        // Nothing else reaches the writer: the refused posts below stop in the handler.
        assert!(writer_rx.recv_timeout(Duration::from_millis(500)).is_err());
        got
    });
    let csrf = open_csrf(&app).await;
    let post = |body: String| {
        Request::post("/devices/1/notes")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("{body}&csrf={csrf}")))
            .unwrap()
    };
    let (status, headers, _) = send(
        &app,
        post("notes=under+the+TV%0D%0A%3Cb%3Ehall%3C%2Fb%3E".into()),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/devices/1");
    let long = format!("notes={}", "x".repeat(1001));
    assert_eq!(send(&app, post(long)).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        send(&app, post("notes=bell%07".into())).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        writer.join().unwrap(),
        (1, "under the TV\n<b>hall</b>".to_owned())
    );
}

#[tokio::test]
async fn rename_refusals_send_nothing() {
    let fx = fixture();
    let csrf = open_csrf(&fx.app).await;
    let form = |uri: &str, body: &str, site: Option<&str>| {
        let mut r =
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(site) = site {
            r = r.header("sec-fetch-site", site);
        }
        r.body(Body::from(format!("{body}&csrf={csrf}"))).unwrap()
    };
    let (status, _, _) = send(
        &fx.app,
        form("/devices/1/name", "name=x", Some("cross-site")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let cross_origin = Request::post("/devices/1/name")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "192.168.1.1:8080")
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::from("name=x"))
        .unwrap();
    assert_eq!(send(&fx.app, cross_origin).await.0, StatusCode::FORBIDDEN);
    let long = format!("name={}", "x".repeat(65));
    assert_eq!(
        send(&fx.app, form("/devices/1/name", &long, None)).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&fx.app, form("/devices/1/name", "nom=x", None))
            .await
            .0
            .as_u16()
            / 100,
        4
    );
    assert_eq!(
        send(&fx.app, form("/devices/999/name", "name=x", None))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // No state change over GET.
    let (status, _, _) = get(&fx.app, "/devices/1/name?name=x").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        fx.writer_rx.try_recv().is_err(),
        "a refused rename reached the writer"
    );
}

#[tokio::test]
async fn rename_reports_a_stopped_writer() {
    let fx = fixture();
    let Fixture { app, writer_rx, .. } = fx;
    drop(writer_rx);
    let csrf = open_csrf(&app).await;
    let request = Request::post("/devices/1/name")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("name=x&csrf={csrf}")))
        .unwrap();
    let (status, _, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("not saved"), "{body}");
}

#[tokio::test]
async fn events_stream_sends_a_tick_per_commit() {
    let fx = fixture();
    fx.ticks.send_replace(Tick {
        seq: 1,
        ..Tick::default()
    });
    let response = fx
        .app
        .clone()
        .oneshot(Request::get("/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    // The tick from before the connection is not news.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), body.next())
            .await
            .is_err()
    );
    fx.ticks.send_replace(Tick {
        seq: 2,
        flows_new: 3,
        active_flows: 9,
        ..Tick::default()
    });
    let frame = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.to_vec()).unwrap();
    assert!(text.starts_with("event: tick\ndata: {"), "{text}");
    assert!(
        text.contains("\"seq\":2") && text.contains("\"flows_new\":3"),
        "{text}"
    );
    // Shutdown ends the stream.
    fx.state.begin_shutdown();
    let end = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap();
    assert!(end.is_none());
}

#[tokio::test]
async fn serve_stops_gracefully_with_an_open_event_stream() {
    use std::io::{Read, Write};
    let fx = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(netmon::web::serve(
        vec![listener],
        None,
        fx.state.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    // A plain blocking client on its own thread; it keeps the stream open.
    let (conn, head) = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).unwrap();
        (conn, String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    drop(conn);
}
