//! A fresh PostgreSQL database per test on 127.0.0.1:5432 (trust auth, database `test`),
//! dropped at the end. Tests fail, never skip, when PostgreSQL is unreachable.
#![allow(dead_code)]

use sqlx::{Connection, PgConnection};

/// The server to test against: `POLLBUS_TEST_POSTGRES` or the local trust-auth server.
fn admin_urls() -> Vec<String> {
    match std::env::var("POLLBUS_TEST_POSTGRES") {
        Ok(url) => vec![url],
        Err(_) => vec![
            "postgres://postgres@127.0.0.1:5432/test".into(),
            "postgres://root@127.0.0.1:5432/test".into(),
        ],
    }
}

/// A database created for one test.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    admin: String,
    name: String,
}

/// Connects to the admin database, or fails the test with the way to fix it.
pub async fn admin() -> (PgConnection, String) {
    let mut last = String::new();
    for url in admin_urls() {
        match PgConnection::connect(&url).await {
            Ok(conn) => return (conn, url),
            Err(e) => last = e.to_string(),
        }
    }
    panic!(
        "PostgreSQL is not reachable at 127.0.0.1:5432 ({last}); run scripts/ensure-postgres.sh \
         (or set POLLBUS_TEST_POSTGRES to a server's URL)"
    );
}

impl TestDb {
    /// Creates `pollbus_test_<random>`.
    pub async fn create() -> TestDb {
        let (mut conn, admin) = admin().await;
        let name = format!("pollbus_test_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        TestDb {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }

    /// A connection to the test database.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
