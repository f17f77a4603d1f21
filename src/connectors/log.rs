//! A connector's admin log as CSV, as Purview offers it for download: the last 7 days (UTC),
//! newest first; for each day its imports, each followed by its failed items, or the line
//! `No items ingested on mm/dd/yyyy.` when the day had no import.

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::store::connectors::ImportRecord;

/// Days the log covers, today included (Purview keeps 7 days).
pub const DAYS: u64 = 7;

const HEADER: [&str; 13] = [
    "Record type",
    "Import completion time (UTC)",
    "Import id",
    "Items available from source",
    "Items available for import",
    "Imported successfully",
    "Partially imported",
    "Skipped",
    "Failed",
    "Item id",
    "Source user id",
    "Microsoft 365 user id",
    "Failure reason",
];

/// The first day the log covers when it is `now`.
pub fn first_day(now: DateTime<Utc>) -> NaiveDate {
    let today = now.date_naive();
    today.checked_sub_days(Days::new(DAYS - 1)).unwrap_or(today)
}

/// The CSV of `imports` (any order; those outside the window are left out) as of `now`.
pub fn csv(imports: &[ImportRecord], now: DateTime<Utc>) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::new());
    out.write_record(HEADER)?;
    let mut imports: Vec<&ImportRecord> = imports.iter().collect();
    imports.sort_by(|a, b| b.completed.cmp(&a.completed).then(b.id.cmp(&a.id)));
    let first = first_day(now);
    let mut day = now.date_naive();
    while day >= first {
        let of_day: Vec<&&ImportRecord> = imports
            .iter()
            .filter(|i| i.completed.date_naive() == day)
            .collect();
        if of_day.is_empty() {
            out.write_record([format!("No items ingested on {}.", day.format("%m/%d/%Y"))])?;
        }
        for import in of_day {
            let at = import
                .completed
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let id = import.id.to_string();
            out.write_record([
                "Import",
                &at,
                &id,
                &import.items_from_source.to_string(),
                &import.items_for_import().to_string(),
                &import.imported.to_string(),
                &import.partially_imported.to_string(),
                &import.skipped.to_string(),
                &import.failed.to_string(),
                "",
                "",
                "",
                "",
            ])?;
            for failure in &import.failures {
                let item = failure
                    .source_id
                    .clone()
                    .unwrap_or_else(|| format!("#{}", failure.index + 1));
                out.write_record([
                    "Failed item",
                    &at,
                    &id,
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    &neutralise(&item),
                    &neutralise(failure.source_user.as_deref().unwrap_or("")),
                    &neutralise(failure.user.as_deref().unwrap_or("")),
                    &neutralise(&failure.reason),
                ])?;
            }
        }
        match day.pred_opt() {
            Some(previous) => day = previous,
            None => break,
        }
    }
    out.into_inner().map_err(|e| e.into_error().into())
}

/// Client-supplied text opened in a spreadsheet must not become a formula (CSV injection):
/// a leading `=`, `+`, `-`, `@`, tab or carriage return is prefixed with `'`.
fn neutralise(value: &str) -> String {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::connectors::FailedItemRecord;
    use chrono::TimeZone;
    use uuid::Uuid;

    fn import(at: DateTime<Utc>, failures: Vec<FailedItemRecord>) -> ImportRecord {
        ImportRecord {
            id: Uuid::new_v4(),
            connector: Uuid::nil(),
            completed: at,
            correlation_id: None,
            items_from_source: 2,
            imported: 3,
            partially_imported: 0,
            skipped: 1,
            failed: failures.len() as u64,
            failures,
        }
    }

    #[test]
    fn seven_days_newest_first_with_empty_days_and_failed_rows() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("date");
        let failure = FailedItemRecord {
            index: 0,
            source_id: Some("msg-1".into()),
            source_user: Some("=cmd|' /C calc'!A0".into()),
            user: None,
            code: "UserNotMapped".into(),
            reason: "The participant could not be mapped, really.".into(),
        };
        let imports = vec![
            import(now - chrono::Duration::hours(1), vec![failure]),
            import(now - chrono::Duration::days(2), vec![]),
            import(now - chrono::Duration::days(9), vec![]), // outside the window
        ];
        let text = String::from_utf8(csv(&imports, now).expect("csv")).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("Record type,Import completion time (UTC),"));
        assert!(lines[1].starts_with("Import,2026-11-23T11:00:00Z,"));
        assert!(lines[1].ends_with(",2,5,3,0,1,1,,,,"), "{}", lines[1]);
        assert!(lines[2].starts_with("Failed item,2026-11-23T11:00:00Z,"));
        assert!(
            lines[2].contains(",msg-1,'=cmd|' /C calc'!A0,,"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with("\"The participant could not be mapped, really.\""));
        assert_eq!(lines[3], "No items ingested on 11/22/2026.");
        assert!(lines[4].starts_with("Import,2026-11-21T12:00:00Z,"));
        assert_eq!(
            &lines[5..],
            [
                "No items ingested on 11/20/2026.",
                "No items ingested on 11/19/2026.",
                "No items ingested on 11/18/2026.",
                "No items ingested on 11/17/2026.",
            ]
        );
    }
}
