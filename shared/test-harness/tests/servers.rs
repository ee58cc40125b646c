//! The harness's own servers start, restart and clean up.

use std::process::Command;

use test_harness::{NatsServer, Postgres};

fn psql(url: &str, sql: &str) -> Result<String, String> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
        .map(|e| e.path().join("bin/psql"))
        .unwrap_or_else(|| "psql".into());
    let out = Command::new(bin).args([url, "-tAc", sql]).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn postgres_gives_each_test_its_own_database_and_survives_a_restart() {
    let pg = Postgres::start().expect("postgres");
    let a = pg.create_database().expect("db a");
    let b = pg.create_database().expect("db b");
    assert_ne!(a.name, b.name);
    psql(&a.url, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)").expect("write a");
    assert!(psql(&b.url, "SELECT count(*) FROM t").is_err(), "databases are isolated");

    pg.stop_server().expect("stop");
    assert!(psql(&a.url, "SELECT 1").is_err(), "stopped server refuses connections");
    pg.start_server().expect("start again");
    assert_eq!(psql(&a.url, "SELECT x FROM t").expect("read a"), "1");
}

#[tokio::test]
async fn nats_server_restarts_on_the_same_port_with_its_jetstream_store() {
    let mut nats = NatsServer::start().await.expect("nats");
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "KEEP".into(),
        subjects: vec!["keep.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    nats.stop();
    nats.start_again().await.expect("restart");
    let client = async_nats::connect(nats.url()).await.expect("reconnect");
    let js = async_nats::jetstream::new(client);
    js.get_stream("KEEP").await.expect("the stream survived the restart");
}
