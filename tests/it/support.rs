//! Test harness: every test gets its own freshly created MariaDB database, two
//! PostgreSQL databases (Sierra and the Redshift stand-in), an S3 bucket and a Kinesis
//! stream on the local stack, so tests run in parallel and leave little behind.
//!
//! The stack is the one `scripts/local-stack.sh up` starts; `scripts/test.sh` exports
//! its addresses (`PCR_TEST_*`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;
use chrono::NaiveDateTime;
use pc_reserve_poller::app;
use pc_reserve_poller::aws::{AwsSettings, sdk_config};
use pc_reserve_poller::config::yaml::ConfigFile;
use pc_reserve_poller::config::{RawConfig, Settings, kms::NoDecrypter};
use pc_reserve_poller::domain::{Cursor, PcReserveRecord};
use pc_reserve_poller::encode::{AvroEncoder, schema_from_response};
use pc_reserve_poller::pipeline::RunSummary;
use pc_reserve_poller::pseudonym::{Salt, pseudonym};
use rand::Rng as _;
use sqlx::{Connection as _, Executor as _};

/// The salt every test uses (cost 4 keeps tests fast).
pub const SALT: &str = "$2b$04$abcdefghijklmnopqrstuu";

/// The pseudonym of `text` under [`SALT`].
pub fn p(text: &str) -> String {
    pseudonym(&Salt::parse(SALT).unwrap(), text.as_bytes())
}

/// Addresses of the local stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub mysql_admin: String,
    pub pg_admin: String,
    pub aws_endpoint: String,
    pub schema_url: String,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with scripts/test.sh, or `eval \"$(scripts/local-stack.sh env)\"` after `scripts/local-stack.sh up`"
        )
    })
}

impl Stack {
    pub fn from_env() -> Self {
        Self {
            mysql_admin: env("PCR_TEST_MYSQL_ADMIN_URL"),
            pg_admin: env("PCR_TEST_PG_ADMIN_URL"),
            aws_endpoint: env("PCR_TEST_AWS_ENDPOINT"),
            schema_url: env("PCR_TEST_SCHEMA_URL"),
        }
    }

    pub fn aws(&self) -> AwsSettings {
        AwsSettings {
            region: Some("us-east-1".into()),
            profile: None,
            endpoint_url: Some(self.aws_endpoint.clone()),
            max_attempts: 2,
            ..AwsSettings::default()
        }
    }
}

/// One Envisionware row.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: i64,
    pub barcode: Option<String>,
    pub minutes: Option<i64>,
    pub date_time: Option<NaiveDateTime>,
    pub branch: Option<String>,
    pub area: Option<String>,
    pub staff_override: Option<String>,
}

pub fn dt(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// A reservation at `date_time` by `barcode`.
pub fn row(key: i64, barcode: Option<&str>, date_time: &str) -> Row {
    Row {
        key,
        barcode: barcode.map(String::from),
        minutes: Some(45),
        date_time: Some(dt(date_time)),
        branch: Some("Mid-Manhattan".into()),
        area: Some("Floor 2".into()),
        staff_override: None,
    }
}

/// A test's own databases, bucket and stream.
pub struct TestEnv {
    pub stack: Stack,
    pub name: String,
    pub sdk: SdkConfig,
    pub bucket: String,
    pub cursor_key: String,
    pub stream_arn: String,
    pub encoder: AvroEncoder,
}

fn url_with_db(base: &str, db: &str) -> String {
    format!("{}/{db}", base.trim_end_matches('/'))
}

/// Splits an SQL file into statements (they end with `;` at a line end).
pub fn statements(sql: &str) -> Vec<String> {
    sql.split(";\n")
        .map(|s| s.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n"))
        .map(|s| s.trim().trim_end_matches(';').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with_stack(Stack::from_env()).await
    }

    /// A test environment whose AWS calls go to `stack.aws_endpoint` (e.g. a moto of the
    /// test's own), with the environment's credentials.
    pub async fn with_stack(stack: Stack) -> Self {
        let suffix: String = {
            let mut rng = rand::rng();
            (0..10).map(|_| (b'a' + rng.random_range(0..26u8)) as char).collect()
        };
        let name = format!("pcr_it_{suffix}");

        let mut my =
            sqlx::MySqlConnection::connect(&stack.mysql_admin).await.expect("MariaDB admin connection");
        my.execute(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4").as_str()).await.unwrap();
        let mut my = sqlx::MySqlConnection::connect(&url_with_db(&stack.mysql_admin, &name)).await.unwrap();
        for s in statements(include_str!("../../scripts/local-stack/sql/envisionware.sql")) {
            my.execute(s.as_str()).await.unwrap();
        }

        let mut pg = sqlx::PgConnection::connect(&url_with_db(&stack.pg_admin, "postgres"))
            .await
            .expect("PostgreSQL admin connection");
        for db in [format!("{name}_sierra"), format!("{name}_rs")] {
            pg.execute(format!("CREATE DATABASE {db} ENCODING 'UTF8' TEMPLATE template0").as_str())
                .await
                .unwrap();
        }
        let mut sierra =
            sqlx::PgConnection::connect(&url_with_db(&stack.pg_admin, &format!("{name}_sierra")))
                .await
                .unwrap();
        for s in statements(include_str!("../../scripts/local-stack/sql/sierra.sql")) {
            sierra.execute(s.as_str()).await.unwrap();
        }
        let mut rs =
            sqlx::PgConnection::connect(&url_with_db(&stack.pg_admin, &format!("{name}_rs"))).await.unwrap();
        let rs_sql = include_str!("../../scripts/local-stack/sql/redshift.sql")
            .replace("{{PATRON_INFO_TABLE}}", &format!("patron_info_{name}_rs"))
            .replace("{{PC_RESERVE_TABLE}}", &format!("pc_reserve_{name}_rs"));
        for s in statements(&rs_sql) {
            rs.execute(s.as_str()).await.unwrap();
        }

        let sdk = sdk_config(&stack.aws()).await;
        let bucket = name.replace('_', "-");
        let s3 = s3_client(&sdk);
        s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
        let kinesis = aws_sdk_kinesis::Client::new(&sdk);
        kinesis.create_stream().stream_name(&name).shard_count(1).send().await.expect("create stream");
        let mut stream_arn = String::new();
        for _ in 0..100 {
            let d = kinesis.describe_stream_summary().stream_name(&name).send().await.unwrap();
            let summary = d.stream_description_summary().unwrap();
            if summary.stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active {
                stream_arn = summary.stream_arn().to_string();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!stream_arn.is_empty(), "stream never became active");
        let encoder = AvroEncoder::from_schema_text(
            &schema_from_response(include_bytes!("../fixtures/PcReserve-schema-response.json")).unwrap(),
        )
        .unwrap();
        Self { stack, name, sdk, bucket, cursor_key: "poller/state.json".into(), stream_arn, encoder }
    }

    pub fn mysql_url(&self) -> String {
        url_with_db(&self.stack.mysql_admin, &self.name)
    }

    pub fn sierra_url(&self) -> String {
        url_with_db(&self.stack.pg_admin, &format!("{}_sierra", self.name))
    }

    pub fn redshift_url(&self) -> String {
        url_with_db(&self.stack.pg_admin, &format!("{}_rs", self.name))
    }

    /// The variables of a complete configuration for this environment.
    pub fn variables(&self) -> BTreeMap<String, String> {
        let admin_part = |url: &str| -> (String, String, String, String) {
            // mysql://user:pass@host:port
            let rest = url.split("://").nth(1).unwrap();
            let (cred, hostport) = rest.split_once('@').unwrap();
            let (user, pass) = cred.split_once(':').unwrap_or((cred, ""));
            let (host, port) = hostport.trim_end_matches('/').split_once(':').unwrap();
            (user.into(), pass.into(), host.into(), port.into())
        };
        let (my_user, my_pass, my_host, my_port) = admin_part(&self.stack.mysql_admin);
        let (pg_user, pg_pass, pg_host, pg_port) = admin_part(&self.stack.pg_admin);
        let mut v: BTreeMap<String, String> = [
            ("AWS_REGION", "us-east-1".to_string()),
            ("ENVISIONWARE_DB_HOST", my_host),
            ("ENVISIONWARE_DB_PORT", my_port),
            ("ENVISIONWARE_DB_NAME", self.name.clone()),
            ("ENVISIONWARE_DB_USER", my_user),
            ("ENVISIONWARE_DB_PASSWORD", my_pass),
            ("ENVISIONWARE_DB_SSLMODE", "disable".into()),
            ("SIERRA_DB_HOST", pg_host.clone()),
            ("SIERRA_DB_PORT", pg_port.clone()),
            ("SIERRA_DB_NAME", format!("{}_sierra", self.name)),
            ("SIERRA_DB_USER", pg_user.clone()),
            ("SIERRA_DB_PASSWORD", pg_pass.clone()),
            ("SIERRA_DB_SSLMODE", "disable".into()),
            ("REDSHIFT_DB_HOST", pg_host),
            ("REDSHIFT_DB_PORT", pg_port),
            ("REDSHIFT_DB_NAME", format!("{}_rs", self.name)),
            ("REDSHIFT_DB_USER", pg_user),
            ("REDSHIFT_DB_PASSWORD", pg_pass),
            ("REDSHIFT_DB_SSLMODE", "disable".into()),
            ("KINESIS_STREAM_ARN", self.stream_arn.clone()),
            ("KINESIS_BATCH_SIZE", "500".into()),
            ("KINESIS_MAX_RECORDS_PER_SECOND", "0".into()),
            ("ENVISIONWARE_BATCH_SIZE", "1000".into()),
            ("BCRYPT_SALT", SALT.into()),
            ("S3_BUCKET", self.bucket.clone()),
            ("S3_RESOURCE", self.cursor_key.clone()),
            ("PC_RESERVE_SCHEMA_URL", self.stack.schema_url.clone()),
            ("PCR_DATE_TIME", "2023-01-01 00:00:00".into()),
            ("PCR_KEY", "0".into()),
            ("RETRY_ATTEMPTS", "2".into()),
            ("RETRY_BASE_DELAY_MS", "10".into()),
            ("DB_CONNECT_TIMEOUT_SECONDS", "5".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        v.insert("AWS_ENDPOINT_URL".into(), self.stack.aws_endpoint.clone());
        v
    }

    /// Settings from [`Self::variables`] with `changes` applied (`None` removes).
    pub async fn settings(&self, changes: &[(&str, Option<&str>)]) -> Settings {
        let mut plaintext = self.variables();
        for (k, v) in changes {
            match v {
                Some(v) => plaintext.insert(k.to_string(), v.to_string()),
                None => plaintext.remove(*k),
            };
        }
        RawConfig::from_parts(
            ConfigFile { plaintext, encrypted: BTreeMap::new() },
            &|_| None,
            &BTreeMap::new(),
        )
        .resolve(&NoDecrypter)
        .await
        .expect("valid test settings")
    }

    /// One run with the real stages.
    pub async fn run(&self, changes: &[(&str, Option<&str>)]) -> Result<RunSummary, app::AppError> {
        let settings = self.settings(changes).await;
        // Bounded: a run that hangs fails its test instead of hanging the suite.
        tokio::time::timeout(Duration::from_secs(300), app::run_once(&settings, &self.sdk, &self.stack.aws()))
            .await
            .expect("the run did not finish within 300 s")
    }

    pub async fn insert_rows(&self, rows: &[Row]) {
        let mut c = sqlx::MySqlConnection::connect(&self.mysql_url()).await.unwrap();
        for r in rows {
            sqlx::query("INSERT INTO strad_bci (pcrKey, pcrUserID, pcrMinutesUsed, pcrDateTime, pcrBranch, pcrArea, pcrUserData1) VALUES (?, ?, ?, ?, ?, ?, ?)")
                .bind(r.key)
                .bind(&r.barcode)
                .bind(r.minutes)
                .bind(r.date_time)
                .bind(&r.branch)
                .bind(&r.area)
                .bind(&r.staff_override)
                .execute(&mut c)
                .await
                .unwrap();
        }
    }

    /// A Sierra patron: phrase entry `b<barcode>` -> id, and a patron_view row.
    pub async fn insert_patron(
        &self,
        id: i64,
        barcode: &str,
        ptype: Option<i32>,
        pcode3: Option<i32>,
        home: Option<&str>,
    ) {
        self.insert_phrase(id, barcode).await;
        self.insert_patron_row(id, Some(barcode), ptype, pcode3, home).await;
    }

    pub async fn insert_phrase(&self, id: i64, barcode: &str) {
        let mut c = sqlx::PgConnection::connect(&self.sierra_url()).await.unwrap();
        sqlx::query(
            "INSERT INTO sierra_view.phrase_entry (record_id, index_tag, index_entry) VALUES ($1, 'b', $2)",
        )
        .bind(id)
        .bind(barcode)
        .execute(&mut c)
        .await
        .unwrap();
    }

    pub async fn insert_patron_row(
        &self,
        id: i64,
        barcode: Option<&str>,
        ptype: Option<i32>,
        pcode3: Option<i32>,
        home: Option<&str>,
    ) {
        let mut c = sqlx::PgConnection::connect(&self.sierra_url()).await.unwrap();
        sqlx::query("INSERT INTO sierra_view.patron_view (id, record_num, barcode, ptype_code, pcode3, home_library_code) VALUES ($1, 1000000, $2, $3, $4, $5)")
            .bind(id)
            .bind(barcode)
            .bind(ptype)
            .bind(pcode3)
            .bind(home)
            .execute(&mut c)
            .await
            .unwrap();
    }

    /// A Redshift row keyed by the pseudonym of `patron_id`.
    pub async fn insert_geo(&self, patron_id: i64, postal: &str, geoid: &str) {
        let mut c = sqlx::PgConnection::connect(&self.redshift_url()).await.unwrap();
        sqlx::query(&format!(
            "INSERT INTO patron_info_{}_rs (patron_id, postal_code, geoid) VALUES ($1, $2, $3)",
            self.name
        ))
        .bind(p(&patron_id.to_string()))
        .bind(postal)
        .bind(geoid)
        .execute(&mut c)
        .await
        .unwrap();
    }

    /// Writes the cursor object as raw bytes (e.g. in the original's format).
    pub async fn put_cursor_object(&self, body: &str) {
        s3_client(&self.sdk)
            .put_object()
            .bucket(&self.bucket)
            .key(&self.cursor_key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }

    /// The cursor object's text, if any.
    pub async fn cursor_object(&self) -> Option<String> {
        let out =
            s3_client(&self.sdk).get_object().bucket(&self.bucket).key(&self.cursor_key).send().await.ok()?;
        Some(String::from_utf8(out.body.collect().await.unwrap().into_bytes().to_vec()).unwrap())
    }

    pub async fn cursor(&self) -> Option<Cursor> {
        self.cursor_object().await.map(|t| Cursor::from_json(t.as_bytes()).unwrap())
    }

    /// Every record on the stream, decoded, in shard order.
    pub async fn sent(&self) -> Vec<PcReserveRecord> {
        let kinesis = aws_sdk_kinesis::Client::new(&self.sdk);
        let shards = kinesis.list_shards().stream_arn(&self.stream_arn).send().await.unwrap();
        let mut out = Vec::new();
        for shard in shards.shards() {
            let mut iterator = kinesis
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(shard.shard_id())
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator
                .unwrap();
            loop {
                let got = kinesis
                    .get_records()
                    .stream_arn(&self.stream_arn)
                    .shard_iterator(&iterator)
                    .limit(10_000)
                    .send()
                    .await
                    .unwrap();
                for r in got.records() {
                    out.push(self.encoder.decode(r.data().as_ref()).expect("decodable datum"));
                }
                match got.next_shard_iterator() {
                    Some(next) if !got.records().is_empty() => iterator = next.to_string(),
                    _ => break,
                }
            }
        }
        out
    }

    /// Drops the databases (best effort; the stack is disposable anyway).
    pub async fn cleanup(self) {
        if let Ok(mut my) = sqlx::MySqlConnection::connect(&self.stack.mysql_admin).await {
            let _ = my.execute(format!("DROP DATABASE IF EXISTS {}", self.name).as_str()).await;
        }
        if let Ok(mut pg) = sqlx::PgConnection::connect(&url_with_db(&self.stack.pg_admin, "postgres")).await
        {
            for db in [format!("{}_sierra", self.name), format!("{}_rs", self.name)] {
                let _ = pg.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await;
            }
        }
    }
}

/// The SDK configuration of a caller with these static credentials.
pub async fn sdk_as(endpoint: &str, access_key_id: &str, secret: &str) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(access_key_id, secret, None, None, "test"))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await
}

pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build())
}

/// Records by key pseudonym.
pub fn by_key(records: &[PcReserveRecord]) -> BTreeMap<String, PcReserveRecord> {
    let mut map = BTreeMap::new();
    for r in records {
        assert!(map.insert(r.key.clone(), r.clone()).is_none(), "duplicate record for key {}", r.key);
    }
    map
}

/// `n` reservations by 7 returning patrons (barcodes `2333300000000k`); three share each
/// timestamp, so batch edges fall inside ties.
pub fn many_rows(n: i64) -> Vec<Row> {
    (1..=n)
        .map(|k| {
            let barcode = format!("2333300000{:04}", k % 7);
            let second = (k - 1) / 3;
            row(k, Some(&barcode), &format!("2024-06-01 10:{:02}:{:02}", second / 60, second % 60))
        })
        .collect()
}
