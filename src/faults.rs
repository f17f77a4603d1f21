//! Faults on demand, for partners testing their retry logic: rules set through the admin API
//! (`/api/faults`) that match ingestion requests by tenant, app and operation and inject an
//! answer (EWS `ErrorServerBusy` as Exchange Online throttles, HTTP 503/429, added latency, a
//! dropped connection). In memory only: faults are test-time configuration.
//!
//! Matching happens after authentication and parsing, before anything is stored
//! (`http::ews::handle`); the wire answers are written by `errors.rs`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The operations a rule may name (the labels of `http::metrics::operation_label`).
pub const OPERATIONS: &[&str] = &["CreateItem", "GetFolder", "ConvertId", "CreateAttachment"];

const MAX_BACK_OFF_MS: u64 = 24 * 3600 * 1000;
const MAX_RETRY_AFTER_S: u64 = 24 * 3600;
const MAX_LATENCY_MS: u64 = 120_000;
const MAX_RULES: usize = 1000;

fn default_back_off() -> u64 {
    5000
}

fn default_retry_after() -> u64 {
    5
}

/// What a rule injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Fault {
    /// HTTP 500 SOAP fault `ErrorServerBusy` with `BackOffMilliseconds` in `MessageXml`.
    #[serde(rename_all = "camelCase")]
    ServerBusy {
        #[serde(default = "default_back_off")]
        back_off_milliseconds: u64,
    },
    /// HTTP 200 whose every response message is an `ErrorServerBusy` error with
    /// `BackOffMilliseconds` in `MessageXml`.
    #[serde(rename_all = "camelCase")]
    ItemServerBusy {
        #[serde(default = "default_back_off")]
        back_off_milliseconds: u64,
    },
    /// HTTP 503 with `Retry-After`.
    #[serde(rename_all = "camelCase")]
    Http503 {
        #[serde(default = "default_retry_after")]
        retry_after_seconds: u64,
    },
    /// HTTP 429 with `Retry-After`.
    #[serde(rename_all = "camelCase")]
    Http429 {
        #[serde(default = "default_retry_after")]
        retry_after_seconds: u64,
    },
    /// Added latency; the request then proceeds normally.
    Latency { milliseconds: u64 },
    /// The connection is closed without an HTTP answer.
    DropConnection,
    /// A throttling budget per app: at most `itemsPerMinute` CreateItem items a minute (a token
    /// bucket that refills continuously); a request over it is answered as `serverBusy` with
    /// the back-off after which the budget covers it.
    #[serde(rename_all = "camelCase")]
    ItemBudget { items_per_minute: u64 },
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::ServerBusy { .. } => "serverBusy",
            Fault::ItemServerBusy { .. } => "itemServerBusy",
            Fault::Http503 { .. } => "http503",
            Fault::Http429 { .. } => "http429",
            Fault::Latency { .. } => "latency",
            Fault::DropConnection => "dropConnection",
            Fault::ItemBudget { .. } => "itemBudget",
        }
    }

    /// The HTTP status of the answer (0: no answer, the connection is closed).
    pub fn http_status(&self) -> u16 {
        match self {
            Fault::ServerBusy { .. } | Fault::ItemBudget { .. } => 500,
            Fault::ItemServerBusy { .. } | Fault::Latency { .. } => 200,
            Fault::Http503 { .. } => 503,
            Fault::Http429 { .. } => 429,
            Fault::DropConnection => 0,
        }
    }

    fn validate(&self) -> Result<(), String> {
        match *self {
            Fault::ServerBusy {
                back_off_milliseconds: n,
            }
            | Fault::ItemServerBusy {
                back_off_milliseconds: n,
            } if n > MAX_BACK_OFF_MS => Err(format!(
                "backOffMilliseconds must be at most {MAX_BACK_OFF_MS} (got {n})."
            )),
            Fault::Http503 {
                retry_after_seconds: n,
            }
            | Fault::Http429 {
                retry_after_seconds: n,
            } if n > MAX_RETRY_AFTER_S => Err(format!(
                "retryAfterSeconds must be at most {MAX_RETRY_AFTER_S} (got {n})."
            )),
            Fault::Latency { milliseconds: n } if n > MAX_LATENCY_MS => Err(format!(
                "latency milliseconds must be at most {MAX_LATENCY_MS} (got {n})."
            )),
            Fault::ItemBudget {
                items_per_minute: 0,
            } => Err("itemsPerMinute must be at least 1.".into()),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::ServerBusy {
                back_off_milliseconds,
            }
            | Fault::ItemServerBusy {
                back_off_milliseconds,
            } => write!(
                f,
                "{} (BackOffMilliseconds {back_off_milliseconds})",
                self.kind()
            ),
            Fault::Http503 {
                retry_after_seconds,
            }
            | Fault::Http429 {
                retry_after_seconds,
            } => write!(f, "{} (Retry-After {retry_after_seconds})", self.kind()),
            Fault::Latency { milliseconds } => write!(f, "latency ({milliseconds} ms)"),
            Fault::DropConnection => write!(f, "dropConnection (connection closed, no answer)"),
            Fault::ItemBudget { items_per_minute } => {
                write!(f, "itemBudget ({items_per_minute} items per minute)")
            }
        }
    }
}

/// A rule as the admin API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleInput {
    pub id: Option<String>,
    /// Tenant GUID or accepted domain (resolved by the admin API).
    pub tenant: Option<String>,
    pub app_id: Option<String>,
    pub operation: Option<String>,
    pub probability: Option<f64>,
    pub count: Option<u64>,
    pub fault: Fault,
}

/// A validated rule, as listed by the admin API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    pub tenant: Option<Uuid>,
    pub app_id: Option<Uuid>,
    pub operation: Option<&'static str>,
    pub probability: f64,
    /// Faults still to inject; `None`: no limit.
    pub remaining: Option<u64>,
    /// Faults injected so far.
    pub injected: u64,
    pub fault: Fault,
    /// Item budgets (`itemBudget`): the bucket of each app.
    #[serde(skip)]
    buckets: HashMap<Uuid, Bucket>,
}

/// A token bucket: `tokens` items available at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes `items` from a bucket of `capacity` refilled at `capacity` a minute; or the time
    /// until they would be available. A batch larger than the budget waits for a full bucket.
    fn take(&mut self, items: usize, capacity: u64, now: Instant) -> Result<(), Duration> {
        let capacity = capacity as f64;
        let rate = capacity / 60.0; // per second
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.at = now;
        let need = (items as f64).min(capacity);
        if self.tokens >= need {
            self.tokens -= need;
            Ok(())
        } else {
            let wait = (need - self.tokens) / rate;
            Err(Duration::from_millis((wait * 1000.0).ceil() as u64))
        }
    }
}

impl Rule {
    /// Validates `input`; `tenant` is the tenant it names, already resolved to its GUID.
    pub fn validate(input: RuleInput, tenant: Option<Uuid>) -> Result<Rule, String> {
        let app_id = match input.app_id.as_deref().map(str::trim) {
            None => None,
            Some(s) => Some(
                Uuid::parse_str(s).map_err(|_| format!("Invalid appId '{s}': expected a GUID."))?,
            ),
        };
        let operation = match input.operation.as_deref().map(str::trim) {
            None => None,
            Some(s) => Some(
                OPERATIONS
                    .iter()
                    .copied()
                    .find(|op| op.eq_ignore_ascii_case(s))
                    .ok_or_else(|| {
                        format!(
                            "Unknown operation '{s}': expected one of {}.",
                            OPERATIONS.join(", ")
                        )
                    })?,
            ),
        };
        let probability = input.probability.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&probability) {
            return Err(format!(
                "probability must be from 0 to 1 (got {probability})."
            ));
        }
        if input.count == Some(0) {
            return Err("count must be at least 1 (leave it out for no limit).".into());
        }
        input.fault.validate()?;
        if matches!(input.fault, Fault::ItemBudget { .. })
            && (input.probability.is_some() || input.count.is_some())
        {
            return Err("probability and count do not apply to an itemBudget rule.".into());
        }
        let id = match input.id.map(|s| s.trim().to_string()) {
            Some(id) if id.is_empty() || id.len() > 100 || id.contains('/') => {
                return Err(format!(
                    "Invalid id '{id}': 1 to 100 characters, no '/' (or leave it out)."
                ))
            }
            Some(id) => id,
            None => String::new(),
        };
        Ok(Rule {
            id,
            tenant,
            app_id,
            operation,
            probability,
            remaining: input.count,
            injected: 0,
            fault: input.fault,
            buckets: HashMap::new(),
        })
    }

    fn matches(&self, tenant: Uuid, app_id: Uuid, operation: &str) -> bool {
        self.tenant.is_none_or(|t| t == tenant)
            && self.app_id.is_none_or(|a| a == app_id)
            && self.operation.is_none_or(|o| o == operation)
    }
}

/// What to do to one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Injection {
    /// Latency to add first (sum of the latency rules that fired).
    pub delay: Duration,
    /// The fault that answers the request, if any (never `Latency`), with its rule id.
    pub fault: Option<(String, Fault)>,
}

#[derive(Default)]
struct Rules {
    list: Vec<Rule>,
    next_id: u64,
}

/// The fault rules of the running server.
#[derive(Default)]
pub struct Faults {
    rules: Mutex<Rules>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<Rule> {
        self.lock().list.clone()
    }

    pub fn get(&self, id: &str) -> Option<Rule> {
        self.lock().list.iter().find(|r| r.id == id).cloned()
    }

    /// Adds a rule (an id is given when it has none); its id, or an error for a duplicate id.
    pub fn add(&self, rule: Rule) -> Result<Rule, String> {
        let mut rules = self.lock();
        if rules.list.len() >= MAX_RULES {
            return Err(format!("At most {MAX_RULES} fault rules."));
        }
        let rule = assign_id(&mut rules, rule)?;
        rules.list.push(rule.clone());
        Ok(rule)
    }

    /// Replaces every rule.
    pub fn replace(&self, new: Vec<Rule>) -> Result<Vec<Rule>, String> {
        if new.len() > MAX_RULES {
            return Err(format!("At most {MAX_RULES} fault rules."));
        }
        let mut rules = self.lock();
        let next_id = rules.next_id;
        let mut fresh = Rules {
            list: Vec::with_capacity(new.len()),
            next_id,
        };
        for rule in new {
            let rule = assign_id(&mut fresh, rule)?;
            fresh.list.push(rule);
        }
        *rules = fresh;
        Ok(rules.list.clone())
    }

    pub fn clear(&self) {
        self.lock().list.clear();
    }

    pub fn remove(&self, id: &str) -> bool {
        let mut rules = self.lock();
        let before = rules.list.len();
        rules.list.retain(|r| r.id != id);
        rules.list.len() != before
    }

    /// Decides the faults of one request. Rules are tried in order: every latency rule that
    /// fires adds its delay; the first other rule that fires answers the request. A rule with a
    /// count is removed once it has injected that many faults.
    ///
    /// `items` is the number of items of a CreateItem request (what an item budget counts).
    pub fn pick(&self, tenant: Uuid, app_id: Uuid, operation: &str, items: usize) -> Injection {
        let mut rules = self.lock();
        let mut injection = Injection::default();
        if rules.list.is_empty() {
            return injection;
        }
        let mut rng = rand::thread_rng();
        for rule in rules.list.iter_mut() {
            if !rule.matches(tenant, app_id, operation) {
                continue;
            }
            if let Fault::ItemBudget { items_per_minute } = rule.fault {
                if items == 0 {
                    continue;
                }
                let now = Instant::now();
                let bucket = rule.buckets.entry(app_id).or_insert(Bucket {
                    tokens: items_per_minute as f64,
                    at: now,
                });
                if let Err(wait) = bucket.take(items, items_per_minute, now) {
                    rule.injected += 1;
                    let back_off_milliseconds = wait.as_millis().max(1) as u64;
                    injection.fault = Some((
                        rule.id.clone(),
                        Fault::ServerBusy {
                            back_off_milliseconds,
                        },
                    ));
                    break;
                }
                continue;
            }
            let fires = rule.probability >= 1.0
                || (rule.probability > 0.0 && rng.gen::<f64>() < rule.probability);
            if !fires {
                continue;
            }
            rule.injected += 1;
            if let Some(n) = rule.remaining.as_mut() {
                *n = n.saturating_sub(1);
            }
            match rule.fault {
                Fault::Latency { milliseconds } => {
                    // Latency rules that match together add up, to the most one rule may ask:
                    // 1,000 rules of 120 s would otherwise hold a request for 33 hours.
                    injection.delay = (injection.delay + Duration::from_millis(milliseconds))
                        .min(Duration::from_millis(MAX_LATENCY_MS));
                }
                fault => {
                    injection.fault = Some((rule.id.clone(), fault));
                    break;
                }
            }
        }
        rules.list.retain(|r| r.remaining != Some(0));
        injection
    }
}

fn assign_id(rules: &mut Rules, mut rule: Rule) -> Result<Rule, String> {
    if rule.id.is_empty() {
        loop {
            rules.next_id += 1;
            let id = rules.next_id.to_string();
            if !rules.list.iter().any(|r| r.id == id) {
                rule.id = id;
                break;
            }
        }
    } else if rules.list.iter().any(|r| r.id == rule.id) {
        return Err(format!(
            "A fault rule with id '{}' already exists.",
            rule.id
        ));
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> Result<Rule, String> {
        let input: RuleInput = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Rule::validate(input, None)
    }

    #[test]
    fn parses_each_kind_with_defaults() {
        let r = input(r#"{"fault":{"kind":"serverBusy"}}"#).unwrap();
        assert_eq!(
            r.fault,
            Fault::ServerBusy {
                back_off_milliseconds: 5000
            }
        );
        let r = input(r#"{"fault":{"kind":"http429","retryAfterSeconds":7}}"#).unwrap();
        assert_eq!(
            r.fault,
            Fault::Http429 {
                retry_after_seconds: 7
            }
        );
        let r = input(r#"{"fault":{"kind":"dropConnection"}}"#).unwrap();
        assert_eq!(r.fault, Fault::DropConnection);
    }

    #[test]
    fn refuses_bad_input() {
        assert!(input(r#"{"fault":{"kind":"explode"}}"#)
            .unwrap_err()
            .contains("unknown variant"));
        assert!(input(r#"{"fault":{"kind":"latency"}}"#).is_err());
        assert!(
            input(r#"{"probability":1.5,"fault":{"kind":"serverBusy"}}"#)
                .unwrap_err()
                .contains("probability")
        );
        assert!(input(r#"{"count":0,"fault":{"kind":"serverBusy"}}"#).is_err());
        assert!(input(r#"{"operation":"FindItem","fault":{"kind":"serverBusy"}}"#).is_err());
        assert!(input(r#"{"appId":"x","fault":{"kind":"serverBusy"}}"#).is_err());
        assert!(input(r#"{"fault":{"kind":"serverBusy","retryAfterSeconds":3}}"#).is_err());
        assert!(input(r#"{"colour":"red","fault":{"kind":"serverBusy"}}"#).is_err());
    }

    #[test]
    fn count_expires_and_latency_accumulates() {
        let faults = Faults::default();
        faults
            .add(input(r#"{"fault":{"kind":"latency","milliseconds":10}}"#).unwrap())
            .unwrap();
        faults
            .add(input(r#"{"count":2,"fault":{"kind":"http503"}}"#).unwrap())
            .unwrap();
        let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..2 {
            let i = faults.pick(t, a, "CreateItem", 1);
            assert_eq!(i.delay, Duration::from_millis(10));
            assert!(matches!(i.fault, Some((_, Fault::Http503 { .. }))));
        }
        assert_eq!(faults.pick(t, a, "CreateItem", 1).fault, None);
        assert_eq!(faults.list().len(), 1);
        // Latency rules add up, to the most one rule may ask.
        for _ in 0..3 {
            faults
                .add(input(r#"{"fault":{"kind":"latency","milliseconds":120000}}"#).unwrap())
                .unwrap();
        }
        assert_eq!(
            faults.pick(t, a, "CreateItem", 1).delay,
            Duration::from_millis(MAX_LATENCY_MS)
        );
    }

    #[test]
    fn item_budget_throttles_per_app_with_the_back_off_that_recovers_it() {
        let mut bucket = Bucket {
            tokens: 60.0,
            at: Instant::now(),
        };
        let now = bucket.at;
        assert!(bucket.take(50, 60, now).is_ok());
        // 10 left, 20 wanted: 10 more at 1 item/s is 10 s.
        assert_eq!(bucket.take(20, 60, now), Err(Duration::from_secs(10)));
        assert!(bucket.take(20, 60, now + Duration::from_secs(10)).is_ok());
        // A batch over the budget waits for a full bucket.
        assert_eq!(
            bucket.take(500, 60, now + Duration::from_secs(10)),
            Err(Duration::from_secs(60))
        );

        let faults = Faults::default();
        faults
            .add(input(r#"{"fault":{"kind":"itemBudget","itemsPerMinute":3}}"#).unwrap())
            .unwrap();
        let (t, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(faults.pick(t, a, "CreateItem", 3).fault, None);
        assert_eq!(faults.pick(t, a, "GetFolder", 0).fault, None);
        match faults.pick(t, a, "CreateItem", 1).fault {
            Some((
                _,
                Fault::ServerBusy {
                    back_off_milliseconds,
                },
            )) => assert!((19_000..=20_000).contains(&back_off_milliseconds)),
            other => panic!("{other:?}"),
        }
        // Another app has its own budget.
        assert_eq!(faults.pick(t, b, "CreateItem", 3).fault, None);
        assert!(input(r#"{"count":1,"fault":{"kind":"itemBudget","itemsPerMinute":3}}"#).is_err());
        assert!(input(r#"{"fault":{"kind":"itemBudget","itemsPerMinute":0}}"#).is_err());
    }
}
