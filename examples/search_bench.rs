//! Content Search benchmark: fills a store and its search index with N generated items (several
//! tenants' mailboxes; Twitter, Bloomberg, SMS and Slack; subjects and bodies from a word list;
//! participants; dates over two years; some attachments) through the code path the server uses
//! (`Store::commit_ingestion`, then `SearchIndex::add`), then times representative KQL queries.
//!
//! ```text
//! cargo run --release --example search_bench -- [--items 1000000] [--runs 50] [--rebuild] [--index-only] [--dir PATH]
//! ```
//!
//! `--rebuild` also times a rebuild of the index from the store (what start-up does when the
//! index is missing or behind). `--index-only` skips the store writes (the index is what the queries read; filling sled with
//! a million items takes much longer than indexing them). `--dir` keeps the data (default: a
//! temporary directory).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use ingest_emulator::domain::TenantId;
use ingest_emulator::search::{kql, SearchIndex};
use ingest_emulator::store::model::*;
use ingest_emulator::store::{IngestionCommit, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const WORDS: &[&str] = &[
    "market",
    "bond",
    "yield",
    "equity",
    "report",
    "quarterly",
    "earnings",
    "merger",
    "deal",
    "client",
    "meeting",
    "call",
    "review",
    "draft",
    "approval",
    "budget",
    "forecast",
    "risk",
    "compliance",
    "audit",
    "trade",
    "order",
    "price",
    "spread",
    "rate",
    "hedge",
    "fund",
    "portfolio",
    "asset",
    "liability",
    "credit",
    "default",
    "swap",
    "option",
    "future",
    "index",
    "volatility",
    "liquidity",
    "capital",
    "margin",
    "settlement",
    "custody",
    "broker",
    "desk",
    "sales",
    "research",
    "analyst",
    "rating",
    "upgrade",
    "downgrade",
    "target",
    "growth",
    "revenue",
    "profit",
    "loss",
    "cost",
    "invoice",
    "payment",
    "contract",
    "agreement",
    "legal",
    "counsel",
    "policy",
    "procedure",
    "training",
    "holiday",
    "lunch",
    "dinner",
    "coffee",
    "travel",
    "flight",
    "hotel",
    "conference",
    "webinar",
    "presentation",
    "slides",
    "memo",
    "update",
    "status",
    "project",
    "launch",
    "release",
    "product",
    "feature",
    "customer",
    "support",
    "ticket",
    "issue",
    "incident",
    "outage",
    "server",
    "network",
    "security",
    "password",
    "access",
    "account",
    "login",
    "phone",
    "message",
    "tweet",
    "post",
    "channel",
    "thread",
    "reply",
    "mention",
    "follow",
    "share",
    "like",
    "photo",
    "video",
    "link",
    "news",
    "press",
    "media",
    "interview",
    "statement",
    "announcement",
    "board",
    "director",
    "officer",
    "manager",
    "team",
    "office",
    "london",
    "newyork",
    "tokyo",
    "singapore",
    "frankfurt",
    "paris",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "morning",
    "afternoon",
    "evening",
    "urgent",
    "important",
    "confidential",
    "internal",
    "external",
    "partner",
    "vendor",
    "supplier",
    "shipment",
    "delivery",
    "warehouse",
    "inventory",
    "stock",
    "shares",
    "dividend",
    "buyback",
    "offering",
    "placement",
    "syndicate",
    "underwriting",
    "prospectus",
    "filing",
    "regulator",
    "inquiry",
    "subpoena",
    "litigation",
    "hold",
    "retention",
    "archive",
    "backup",
    "restore",
    "migration",
    "cloud",
    "platform",
    "integration",
    "connector",
    "pipeline",
    "dashboard",
    "metrics",
    "kpi",
    "target",
    "goal",
    "plan",
    "strategy",
    "roadmap",
    "vision",
];

const SOURCES: &[(&str, &str)] = &[
    ("IPM.NOTE.Twitter.Tweet", "IPM.ExternalData.Twitter.Tweet"),
    (
        "IPM.NOTE.Twitter.DirectMessage",
        "IPM.ExternalData.Twitter.DirectMessage",
    ),
    (
        "IPM.NOTE.Bloomberg.Message",
        "IPM.ExternalData.Bloomberg.Message",
    ),
    (
        "IPM.NOTE.Bloomberg.InstantBloomberg",
        "IPM.ExternalData.Bloomberg.InstantBloomberg",
    ),
    ("IPM.NOTE.SMS", "IPM.ExternalData.SMS"),
    ("IPM.NOTE.Slack.Message", "IPM.ExternalData.Slack.Message"),
];

const TENANTS: usize = 3;
const USERS_PER_TENANT: usize = 40;

struct Args {
    items: usize,
    runs: usize,
    index_only: bool,
    rebuild: bool,
    dir: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut out = Args {
        items: 100_000,
        runs: 50,
        index_only: false,
        rebuild: false,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--items" => {
                out.items = it
                    .next()
                    .and_then(|v| v.replace('_', "").parse().ok())
                    .expect("--items N")
            }
            "--runs" => out.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--index-only" => out.index_only = true,
            "--rebuild" => out.rebuild = true,
            "--dir" => out.dir = it.next().map(Into::into),
            other => panic!("unknown argument {other}"),
        }
    }
    out
}

fn words(rng: &mut StdRng, min: usize, max: usize) -> String {
    let n = rng.gen_range(min..=max);
    (0..n)
        .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn tenant_id(t: usize) -> Uuid {
    Uuid::from_u128(0xbe00_0000_0000_0000_0000_0000_0000_0000 + t as u128)
}

fn upn(t: usize, u: usize) -> String {
    format!("user{u}@tenant{t}.example")
}

fn setup_directory(store: &Store) {
    for t in 0..TENANTS {
        store
            .put_tenant(&TenantRecord {
                id: tenant_id(t),
                display_name: format!("Tenant {t}"),
                domains: vec![format!("tenant{t}.example")],
                third_party_mailbox: Some(format!("thirdparty@tenant{t}.example")),
                retention_days: None,
            })
            .unwrap();
        let mut users: Vec<String> = (0..USERS_PER_TENANT).map(|u| upn(t, u)).collect();
        users.push(format!("thirdparty@tenant{t}.example"));
        for name in users {
            store
                .put_user(
                    TenantId(tenant_id(t)),
                    &UserRecord {
                        user_principal_name: name.clone(),
                        display_name: name.clone(),
                        mail: name,
                        proxy_addresses: vec![],
                        mailbox_enabled: true,
                        litigation_hold: false,
                        external_ids: vec![],
                    },
                )
                .unwrap();
        }
    }
}

fn generate(rng: &mut StdRng, start: DateTime<Utc>) -> ItemRecord {
    let t = rng.gen_range(0..TENANTS);
    let (class, searched) = SOURCES[rng.gen_range(0..SOURCES.len())];
    let source = class.split('.').nth(2).unwrap().to_string();
    let external = |rng: &mut StdRng| AddressRecord {
        name: None,
        address: format!(
            "ext{}@{}.example",
            rng.gen_range(0..5000),
            source.to_lowercase()
        ),
    };
    let internal = |rng: &mut StdRng| {
        let u = rng.gen_range(0..USERS_PER_TENANT);
        (
            u,
            AddressRecord {
                name: Some(format!("User {u}")),
                address: upn(t, u),
            },
        )
    };
    let mut mapped = Vec::new();
    let from = if rng.gen_bool(0.5) {
        let (u, a) = internal(rng);
        mapped.push(u);
        a
    } else {
        external(rng)
    };
    let mut to = Vec::new();
    for _ in 0..rng.gen_range(1..=3) {
        if rng.gen_bool(0.6) {
            let (u, a) = internal(rng);
            mapped.push(u);
            to.push(a);
        } else {
            to.push(external(rng));
        }
    }
    let mut cc = Vec::new();
    if rng.gen_bool(0.2) {
        let (u, a) = internal(rng);
        mapped.push(u);
        cc.push(a);
    }
    mapped.sort();
    mapped.dedup();
    let copies: Vec<CopyRecord> = if mapped.is_empty() {
        vec![CopyRecord {
            mailbox: format!("thirdparty@tenant{t}.example"),
            folder: "Inbox".into(),
        }]
    } else {
        mapped
            .iter()
            .map(|u| CopyRecord {
                mailbox: upn(t, *u),
                folder: "Recoverable Items/Purges".into(),
            })
            .collect()
    };
    let sent = start + chrono::Duration::seconds(rng.gen_range(0..2 * 365 * 86_400));
    let received = sent + chrono::Duration::seconds(rng.gen_range(1..3_600));
    let attachments = if rng.gen_bool(0.1) {
        vec![AttachmentMeta {
            name: format!(
                "{}.{}",
                WORDS[rng.gen_range(0..WORDS.len())],
                ["pdf", "xlsx", "png", "docx"][rng.gen_range(0..4)]
            ),
            content_type: "application/octet-stream".into(),
            size: 1000,
            content_id: None,
            is_inline: false,
        }]
    } else {
        vec![]
    };
    ItemRecord {
        id: Uuid::new_v4(),
        tenant: tenant_id(t),
        correlation_id: Uuid::new_v4(),
        app_id: None,
        received,
        item_class: class.into(),
        searched_item_class: searched.into(),
        kind: "externaldata".into(),
        source,
        event: class.split('.').nth(3).map(str::to_string),
        subject: Some(words(rng, 3, 7)),
        body: Some(words(rng, 15, 45)),
        body_type: Some("Text".into()),
        from,
        sender: None,
        to,
        cc,
        bcc: vec![],
        sent,
        created: None,
        internet_message_id: None,
        attachments,
        extended_properties: vec![],
        from_mime: false,
        size: 2000,
        copies,
    }
}

fn rss_peak_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = args();
    let temp = tempfile::tempdir().unwrap();
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&base).unwrap();
    let store = Store::open(&base.join("store")).unwrap();
    setup_directory(&store);
    let index = SearchIndex::open(&base.join("index"), &store).unwrap();
    index.wait_ready().unwrap();

    let mut rng = StdRng::seed_from_u64(42);
    let start = Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap();
    let batch = 500;
    let began = Instant::now();
    let mut copies = 0usize;
    let mut done = 0;
    while done < args.items {
        let n = batch.min(args.items - done);
        let items: Vec<ItemRecord> = (0..n).map(|_| generate(&mut rng, start)).collect();
        copies += items.iter().map(|i| i.copies.len()).sum::<usize>();
        if !args.index_only {
            let record = IngestionRecord {
                correlation_id: Uuid::new_v4(),
                tenant: items[0].tenant,
                app_id: None,
                received: Utc::now(),
                operation: "CreateItem".into(),
                http_status: 200,
                outcome: "Success".into(),
                items: vec![],
                error: None,
            };
            let commit = IngestionCommit {
                record,
                items: items.iter().map(|i| (i.clone(), vec![])).collect(),
                after: None,
            };
            store.commit_ingestion(commit).await.unwrap();
        }
        index.add(items).unwrap();
        done += n;
        if done % 100_000 == 0 {
            eprintln!("  {done} items ({:.0} s)", began.elapsed().as_secs_f64());
        }
    }
    index.refresh().unwrap();
    let fill = began.elapsed();
    println!(
        "filled {} items ({} copies = index documents) in {:.1} s{}; index {:.0} MB on disk",
        args.items,
        copies,
        fill.as_secs_f64(),
        if args.index_only {
            " (index only)"
        } else {
            " (store + index)"
        },
        dir_size(&base.join("index")) as f64 / 1e6
    );

    let tenant = tenant_id(0);
    let queries = [
        "kind:externaldata",
        "itemclass:ipm.externaldata.twitter*",
        "itemclass:IPM.NOTE.Bloomberg.Message",
        "subject:merger",
        "from:user7@tenant0.example",
        "participants:user3@tenant0.example",
        "sent:2024-03-01..2024-03-31",
        "sent>=2024-06-01 AND received<2024-07-01",
        "(subject:bond OR body:yield) AND NOT itemclass:ipm.externaldata.sms*",
        "quarterly earnings",
        "\"quarterly earnings\"",
        "liquid*",
        "hasattachment:true",
        "attachmentnames:report*",
    ];
    println!(
        "{:<72} {:>9} {:>10} {:>10}",
        "query (tenant 0 of 3, top 100, newest first)", "total", "median", "p95"
    );
    for query in queries {
        let mut times = Vec::with_capacity(args.runs);
        let mut total = 0;
        for _ in 0..args.runs {
            let t = Instant::now();
            let expr = kql::parse(query).unwrap();
            let results = index.search(tenant, &expr, &[], 0, 100).unwrap();
            times.push(t.elapsed());
            total = results.total;
        }
        times.sort();
        println!(
            "{:<72} {:>9} {:>8.2}ms {:>8.2}ms",
            query,
            total,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3
        );
    }
    // With a mailbox filter.
    let mut times = Vec::new();
    let mailbox = vec![upn(0, 5)];
    let mut total = 0;
    for _ in 0..args.runs {
        let t = Instant::now();
        let expr = kql::parse("kind:externaldata").unwrap();
        total = index.search(tenant, &expr, &mailbox, 0, 100).unwrap().total;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "{:<72} {:>9} {:>8.2}ms {:>8.2}ms",
        "kind:externaldata, mailboxes=[user5@tenant0.example]",
        total,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3
    );
    if args.rebuild && !args.index_only {
        let t = Instant::now();
        index.rebuild().unwrap();
        println!(
            "rebuilt the index from the store in {:.1} s ({} items)",
            t.elapsed().as_secs_f64(),
            index.item_count().unwrap()
        );
    }
    if let Some(mb) = rss_peak_mb() {
        println!("peak RSS {mb:.0} MB");
    }
}
