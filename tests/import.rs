//! `pollbus import cloud-elements` on every instance body in the seeds (copied verbatim into
//! `tests/data/cloud-elements/`; `seed003-concur-as-strings.json` and
//! `seed003-concur-snippet-empty.json` apply seed 003's configuration snippet — JSON given as
//! strings, `"true"` as a string — to its example): the output holds no secret and passes
//! `pollbus check`. Rendering each seed's URL template at fixed instants is tested in
//! `src/formats/template.rs` (`seed_templates_render_exactly`).

use pollbus::config::{AuthConfig, Config, RestPaging, SourceKind, TrackedFields};
use pollbus_testkit::cli::{pollbus, text};
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cloud-elements")
        .join(name)
}

const BIN: &str = env!("CARGO_BIN_EXE_pollbus");

/// The `${env:NAME}` names in a configuration, each with a dummy value.
fn env_refs(toml: &str) -> Vec<(String, String)> {
    toml.split("${env:")
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .map(|(name, _)| (name.to_string(), "dummy-value".to_string()))
        .collect()
}

struct Import {
    toml: String,
    warnings: String,
    config: Config,
}

/// Imports `seed` with `--out`, then runs `pollbus check` on the output.
fn import_and_check(seed: &str) -> Import {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pollbus.toml");
    let file = data(seed);
    let run = pollbus(
        BIN,
        None,
        &[
            "import",
            "cloud-elements",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let warnings = text(&run.stderr);
    assert!(run.status.success(), "{seed}: {warnings}");
    let toml = std::fs::read_to_string(&out).unwrap();
    // No secret of the input reaches the output.
    let input: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for pointer in [
        "/configuration/oauth.api.secret",
        "/configuration/password",
        "/providerData/code",
        "/providerData/token",
        "/configuration/event.notification.signature.key",
    ] {
        if let Some(secret) = input.pointer(pointer).and_then(|v| v.as_str()) {
            assert!(!toml.contains(secret), "{seed}: {pointer} leaked:\n{toml}");
        }
    }
    let check = pollbus(
        BIN,
        None,
        &["check", "--config", out.to_str().unwrap()],
        &env_refs(&toml),
    );
    assert!(
        check.status.success(),
        "{seed}: check failed: {}\n{toml}",
        text(&check.stderr)
    );
    let config = Config::parse(&toml, seed).unwrap();
    Import {
        toml,
        warnings,
        config,
    }
}

#[test]
fn seed_000_and_001_servicenow_oauth() {
    for seed in [
        "seed000-servicenowoauth.json",
        "seed001-servicenowoauth.json",
    ] {
        let i = import_and_check(seed);
        let s = &i.config.sources[0];
        assert_eq!(s.kind, SourceKind::Servicenow);
        assert_eq!(
            s.base_url.as_deref(),
            Some("https://SUBDOMAIN.service-now.com")
        );
        assert!(
            i.warnings
                .contains("\"<YOUR_SUBDOMAIN>\" is not a host name"),
            "{}",
            i.warnings
        );
        assert!(
            i.warnings.contains("refresh_interval \"<minutes>\""),
            "{}",
            i.warnings
        );
        assert!(
            i.toml.contains("${env:INSTANCE_NAME_CLIENT_SECRET}"),
            "{}",
            i.toml
        );
        let AuthConfig::Oauth2 { client_id, .. } = &s.auth else {
            panic!("oauth2 expected")
        };
        assert_eq!(client_id, "<CONSUMER_KEY>");
        let r = &s.resources[0];
        assert_eq!(
            (r.name.as_str(), r.entity.as_str()),
            ("core_company", "account")
        );
        assert_eq!(r.id_field.as_deref(), Some("sys_id"));
        assert_eq!(r.dates.updated_field.as_deref(), Some("sys_updated_on"));
        assert_eq!(
            r.dates.updated_format.as_deref(),
            Some("yyyy-MM-dd HH:mm:ss")
        );
        assert_eq!(r.dates.created_field.as_deref(), Some("sys_created_on"));
        assert_eq!(
            r.fields,
            TrackedFields::All,
            "Cloud Elements sent whole objects"
        );
    }
}

#[test]
fn seed_000_and_001_sageone_as_a_rest_resource() {
    let a = import_and_check("seed000-sageone.json");
    let b = import_and_check("seed001-sageone.json");
    let strip = |t: &str| t.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        strip(&a.toml),
        strip(&b.toml),
        "the same example in both seeds"
    );
    let s = &a.config.sources[0];
    assert_eq!((s.kind, s.name.as_str()), (SourceKind::Rest, "api_polling"));
    assert_eq!(s.interval, std::time::Duration::from_secs(15 * 60));
    assert_eq!(
        s.base_url.as_deref(),
        Some("https://api.accounting.sage.com/v3.1")
    );
    let r = &s.resources[0];
    let rest = r.rest.as_ref().unwrap();
    assert_eq!(
        rest.url,
        "/contacts?contact_type_id=CUSTOMER&attributes=all&updated_or_created_since=${date:yyyy-MM-dd'T'HH:mm:ss'Z'}",
        "Sage's attributes=all: every attribute, for fields = \"*\" to track"
    );
    assert_eq!(r.fields, TrackedFields::All);
    assert_eq!(rest.records, "/$items");
    assert_eq!(
        rest.paging,
        RestPaging::NextUrl {
            pointer: "/$next".into()
        }
    );
    assert_eq!(r.dates.updated_timezone.as_deref(), Some("GMT"));
    assert_eq!(
        r.dates.created_format.as_deref(),
        Some("yyyy-MM-dd'T'HH:mm:ss'Z'")
    );
    assert!(!a.toml.contains("xxxxxxxxxxxxxxxxxxxxxx"), "client secret");
    for unmapped in [
        "providerData.code",
        "event.notification.callback.url",
        "event.notification.enabled",
        "oauth.callback.url",
        "tags",
    ] {
        assert!(a.warnings.contains(unmapped), "{unmapped}: {}", a.warnings);
    }
}

#[test]
fn seed_002_revel_with_its_copy_me_entry() {
    let i = import_and_check("seed002-revel.json");
    let s = &i.config.sources[0];
    assert_eq!(s.kind, SourceKind::Revel);
    assert_eq!(
        s.base_url.as_deref(),
        Some("https://testhumanity.revelup.com")
    );
    let AuthConfig::Header { name, .. } = &s.auth else {
        panic!("header auth expected")
    };
    assert_eq!(name, "API-AUTHENTICATION");
    let names: Vec<&str> = s.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Employee", "TimeSheetEntry"]);
    for r in &s.resources {
        assert_eq!(
            r.dates.updated_timezone.as_deref(),
            Some("PST"),
            "{}",
            r.name
        );
        assert_eq!(
            r.dates.updated_format.as_deref(),
            Some("yyyy-MM-dd'T'HH:mm:ss.SSS")
        );
        assert_eq!(r.dates.created_field.as_deref(), Some("created_date"));
    }
    assert!(
        i.warnings.contains("timesheets: no url (a copy-me entry)"),
        "{}",
        i.warnings
    );
    // The same page's curl example is not valid JSON (missing commas); it is refused precisely.
    let bad = pollbus(
        BIN,
        None,
        &[
            "import",
            "cloud-elements",
            data("seed002-revel-curl-malformed.json").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(bad.status.code(), Some(64));
    assert!(
        text(&bad.stderr).contains("not JSON: expected `,` or `}` at line 7 column 1"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn seed_003_concur_with_and_without_strings() {
    let plain = import_and_check("seed003-concur.json");
    let strings = import_and_check("seed003-concur-as-strings.json");
    let strip = |t: &str| t.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&plain.toml), strip(&strings.toml));
    let s = &plain.config.sources[0];
    assert_eq!(
        (s.kind, s.name.as_str()),
        (SourceKind::Concur, "concurfordocs")
    );
    assert_eq!(
        s.base_url.as_deref(),
        Some("https://us.api.concursolutions.com")
    );
    let r = &s.resources[0];
    assert_eq!(
        (r.name.as_str(), r.id_field.as_deref()),
        ("reports", Some("ID"))
    );
    assert_eq!(r.dates.updated_field.as_deref(), Some("LastModifiedDate"));
    assert!(!plain.toml.contains("GNnU6D7uvWMjOyOEsU7uL1Xc4iaEdEOa"));
    assert!(!plain.toml.contains("123456"), "signature key");
    assert!(
        plain.warnings.contains("event.notification.signature.key"),
        "{}",
        plain.warnings
    );
    assert!(
        plain.warnings.contains("event.vendor.type"),
        "{}",
        plain.warnings
    );
    assert!(
        !plain.warnings.contains("filters on something other"),
        "{}",
        plain.warnings
    );

    // The snippet alone polls nothing: refused with exit 64 and the reason.
    let empty = pollbus(
        BIN,
        None,
        &[
            "import",
            "cloud-elements",
            data("seed003-concur-snippet-empty.json").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(empty.status.code(), Some(64));
    assert!(
        text(&empty.stderr).contains("no resource could be mapped"),
        "{}",
        text(&empty.stderr)
    );
}

#[test]
fn servicenow_with_basic_auth() {
    let json = r#"{"element": {"key": "servicenow"}, "name": "Help desk",
        "configuration": {"username": "integration", "password": "S3cret!pw", "servicenow.subdomain": "acme",
        "event.poller.refresh_interval": 5,
        "event.poller.configuration": {"contacts": {"url": "/hubs/helpdesk/contacts?where=sys_updated_on>'${gmtDate:yyyy-MM-dd'T'HH:mm:ss}'", "idField": "sys_id"}}}}"#;
    let imported = pollbus::import::cloud_elements(json, "x.json").unwrap();
    assert!(!imported.toml.contains("S3cret!pw"), "{}", imported.toml);
    let config = Config::parse(&imported.toml, "x").unwrap();
    let s = &config.sources[0];
    assert_eq!(
        (s.name.as_str(), s.kind),
        ("help_desk", SourceKind::Servicenow)
    );
    assert_eq!(s.base_url.as_deref(), Some("https://acme.service-now.com"));
    assert_eq!(s.interval, std::time::Duration::from_secs(300));
    let AuthConfig::Basic { username, password } = &s.auth else {
        panic!("basic auth expected")
    };
    assert_eq!(username, "integration");
    assert_eq!(
        password.reference().to_string(),
        "${env:HELP_DESK_PASSWORD}"
    );
    assert_eq!(s.resources[0].name, "sys_user");
}

#[test]
fn unsupported_input_is_refused_with_the_path() {
    let cases = [
        (
            r#"{"element": {"key": "salesforce"}}"#,
            "element.key: \"salesforce\" is not supported",
        ),
        (r#"{"configuration": {}}"#, "element.key: missing"),
        (
            r#"{"element": {"key": "revel"}, "configuration": {"event.poller.configuration": "[1]"}}"#,
            "a string that is not a JSON object",
        ),
    ];
    for (json, expect) in cases {
        let err = pollbus::import::cloud_elements(json, "x.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect), "{err}");
    }
    let unknown_hub = r#"{"element": {"key": "revel"}, "configuration": {"event.poller.configuration": {
        "orders": {"url": "/hubs/ecommerce/orders?where=updated_date__gte='${date:yyyy-MM-dd}'"},
        "employees": {"url": "/hubs/employee/employees?where=updated_date__gte='${nope}'"},
        "timesheets": {"url": "/hubs/employee/timesheets?where=updated_date__gte='${DateTimeZone:PST:yyyy-MM-dd'T'HH:mm:ss.SSS}'",
                       "datesConfiguration": {"updatedDateFormat": "yyyy-MM-ddTHH"}}}}}"#;
    let imported = pollbus::import::cloud_elements(unknown_hub, "x.json").unwrap();
    let w = imported.warnings.join("\n");
    assert!(
        w.contains("orders: not imported: hub path \"/hubs/ecommerce/orders\""),
        "{w}"
    );
    assert!(w.contains("employees: not imported: url"), "{w}");
    assert!(
        w.contains("datesConfiguration.updatedDateFormat: not mapped: unknown letter 'T'"),
        "{w}"
    );
    let config = Config::parse(&imported.toml, "x").unwrap();
    let r = &config.sources[0].resources[0];
    assert_eq!(r.name, "TimeSheetEntry");
    assert_eq!(
        r.dates.updated_timezone.as_deref(),
        Some("PST"),
        "taken from the URL's zone"
    );
}
