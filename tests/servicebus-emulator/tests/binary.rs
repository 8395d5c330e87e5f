//! The `servicebus-emulator` binary: starts from a Config.json on an ephemeral port, prints its
//! address and connection string, speaks AMQP, and refuses a bad configuration.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::Command,
};

const BIN: &str = env!("CARGO_BIN_EXE_servicebus-emulator");

#[tokio::test]
async fn binary_listens_and_answers_the_sasl_header() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/Config.json");
    let mut child = Command::new(BIN)
        .args([
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--shared-access-key",
            "k",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("address printed within 20 s")
        .expect("stdout readable")
        .expect("a line");
    let addr = first
        .strip_prefix("listening on ")
        .expect("'listening on ADDR'")
        .to_string();
    let conn = lines
        .next_line()
        .await
        .unwrap()
        .expect("connection string line");
    assert!(conn.contains(&format!("Endpoint=sb://{addr};")), "{conn}");
    assert!(
        conn.contains("SharedAccessKey=k;") && conn.contains("UseDevelopmentEmulator=true"),
        "{conn}"
    );

    let mut socket = TcpStream::connect(&addr).await.expect("connects");
    socket.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
    let mut header = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut header))
        .await
        .expect("answer within 5 s")
        .unwrap();
    assert_eq!(&header, b"AMQP\x03\x01\x00\x00");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn binary_refuses_a_bad_config() {
    let dir = std::env::temp_dir().join(format!("sb-emu-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("Config.json");
    std::fs::write(&path, r#"{"UserConfig":{"Namespaces":[{"Queues":[{"Name":"q","Properties":{"LockDuration":"one minute"}}]}]}}"#).unwrap();
    let out = Command::new(BIN)
        .args([
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("one minute"),
        "error names the bad duration: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
