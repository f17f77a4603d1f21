//! The EWS operations behind the ingestion endpoint, for an authenticated principal:
//! validate -> route -> store atomically -> reply. Knows no HTTP; XML only through `ews::reply`.

pub mod route;
pub mod validate;

use chrono::Utc;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::{Destination, Folder, Item, Principal, TenantId, MAX_ITEM_BYTES};
use crate::ews::reply::{self, AttachmentResult, FolderInfo, FolderResult, ItemResult};
use crate::ews::types::{CreateAttachment, CreateItem, EwsRequest, FolderRef, Operation};
use crate::store::connectors::{ImportCommit, ImportRecord};
use crate::store::model::*;
use crate::store::{IngestionCommit, StoreError};
use validate::ItemError;

/// Request-level failures: the whole request is refused and nothing is stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The documented sender rule (answered 401 with the documented text).
    #[error("the sender {address} has no active mailbox in the tenant")]
    SenderNotActive { address: String },
    #[error("The request contains {count} items; at most {max} items are accepted in one CreateItem request.")]
    TooManyItems { count: usize, max: usize },
    #[error("The request names {count} folders; at most {MAX_FOLDER_IDS} folders are accepted in one GetFolder request.")]
    TooManyFolders { count: usize },
    /// Too many ids in a ConvertId or attachments in a CreateAttachment: each costs a response
    /// message (about 300 bytes), a bound on what one request can make the server write.
    #[error("The request names {count} {element}; at most {max} are accepted in one {operation} request.")]
    TooManyElements {
        operation: &'static str,
        element: &'static str,
        count: usize,
        max: usize,
    },
    #[error("The operation {0} is not supported by the third-party ingestion service; it accepts CreateItem (and GetFolder, ConvertId, CreateAttachment for client compatibility).")]
    UnsupportedOperation(String),
    #[error("the token's tenant {0} does not exist")]
    UnknownTenant(TenantId),
    /// The app's data connector in the tenant is paused by the tenant's admin.
    #[error("The data connector '{name}' (id {id}) of this app is paused in this tenant: its requests are refused and nothing was stored. The tenant's admin resumes it (PUT /api/compliance/connectors/{id} {{\"paused\": false}}).")]
    ConnectorPaused { name: String, id: Uuid },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to one EWS request: its SOAP body and, for CreateItem, what came of each item.
pub struct Answer {
    pub xml: String,
    pub items: Option<ItemTally>,
}

/// What came of the items of a CreateItem request (for the metrics and the log).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ItemTally {
    pub stored: u64,
    /// The response code of each rejected item.
    pub rejected: Vec<String>,
}

impl ItemTally {
    /// `Success`, `PartialSuccess` or `Failed`, as the reply's response classes add up.
    pub fn outcome(&self) -> &'static str {
        match (self.stored, self.rejected.len()) {
            (_, 0) => "Success",
            (0, _) => "Failed",
            _ => "PartialSuccess",
        }
    }
}

/// Most folders one GetFolder request may name (clients ask for one to a few; each costs a
/// count of the folder's items).
pub const MAX_FOLDER_IDS: usize = 100;

/// Most ids one ConvertId request may name (clients send one, as a version probe).
pub const MAX_CONVERT_IDS: usize = 100;

/// Most attachments one CreateAttachment request may carry.
pub const MAX_ATTACHMENTS_PER_REQUEST: usize = 1000;

/// The request-size rules (at most `max_items_per_request` items in a CreateItem,
/// [`MAX_FOLDER_IDS`] folders in a GetFolder, [`MAX_CONVERT_IDS`] ids in a ConvertId,
/// [`MAX_ATTACHMENTS_PER_REQUEST`] attachments in a CreateAttachment): checked before anything
/// else looks at the request, fault injection included, so what one request makes the server
/// write (one response message per element) is bounded.
pub fn check_limits(state: &AppState, request: &EwsRequest) -> Result<(), IngestError> {
    let max = state.config.max_items_per_request;
    match &request.operation {
        Operation::CreateItem(create) if create.items.len() > max => {
            Err(IngestError::TooManyItems {
                count: create.items.len(),
                max,
            })
        }
        Operation::GetFolder(get) if get.folders.len() > MAX_FOLDER_IDS => {
            Err(IngestError::TooManyFolders {
                count: get.folders.len(),
            })
        }
        Operation::ConvertId { source_ids } if *source_ids > MAX_CONVERT_IDS => {
            Err(IngestError::TooManyElements {
                operation: "ConvertId",
                element: "ids",
                count: *source_ids,
                max: MAX_CONVERT_IDS,
            })
        }
        Operation::CreateAttachment(create)
            if create.attachments.len() > MAX_ATTACHMENTS_PER_REQUEST =>
        {
            Err(IngestError::TooManyElements {
                operation: "CreateAttachment",
                element: "attachments",
                count: create.attachments.len(),
                max: MAX_ATTACHMENTS_PER_REQUEST,
            })
        }
        _ => Ok(()),
    }
}

/// Executes one parsed EWS request and returns its answer.
pub async fn execute(
    state: &AppState,
    principal: &Principal,
    request: EwsRequest,
    correlation_id: Uuid,
) -> Result<Answer, IngestError> {
    check_limits(state, &request)?;
    let xml = match request.operation {
        Operation::CreateItem(create) => {
            return create_item(state, principal, create, correlation_id).await
        }
        Operation::GetFolder(get) => {
            get_folder(state, principal, &request.header.impersonated, &get.folders)?
        }
        Operation::ConvertId { source_ids } => reply::convert_id_error(source_ids),
        Operation::CreateAttachment(create) => create_attachment(state, principal, create).await?,
        Operation::Unsupported(name) => return Err(IngestError::UnsupportedOperation(name)),
    };
    Ok(Answer { xml, items: None })
}

async fn create_item(
    state: &AppState,
    principal: &Principal,
    create: CreateItem,
    correlation_id: Uuid,
) -> Result<Answer, IngestError> {
    let store = &state.store;
    let tenant = store
        .tenant(principal.tenant)?
        .ok_or(IngestError::UnknownTenant(principal.tenant))?;
    let connector = store.partner_connector(principal.tenant, principal.app_id.0)?;
    if let Some(c) = &connector {
        if c.paused {
            let reason = format!(
                "the data connector '{}' ({}) is paused: whole request refused",
                c.name, c.id
            );
            journal_refusal(store, principal, correlation_id, 403, reason).await;
            return Err(IngestError::ConnectorPaused {
                name: c.name.clone(),
                id: c.id,
            });
        }
    }
    let validated: Vec<Result<Item, ItemError>> =
        create.items.iter().map(validate::validate).collect();

    let mut resolver = route::Resolver::new(store, principal.tenant);
    for item in validated.iter().flatten() {
        if let Some(address) = route::inactive_sender(&mut resolver, &tenant, item)? {
            let reason = format!(
                "the sender {address} has no active mailbox in the tenant: whole request refused"
            );
            journal_refusal(store, principal, correlation_id, 401, reason).await;
            return Err(IngestError::SenderNotActive { address });
        }
    }

    let received = Utc::now();
    // The items of one request are stored as one group (see `store::ItemIds`).
    let mut ids = crate::store::ItemIds::for_request(correlation_id);
    let mut results = Vec::with_capacity(validated.len());
    let mut outcomes = Vec::with_capacity(validated.len());
    let mut items = Vec::new();
    for (index, item) in validated.into_iter().enumerate() {
        let routed = item.and_then(|item| match route::route(&mut resolver, &tenant, &item) {
            Ok(destinations) => Ok((item, destinations)),
            Err(route::RouteError::NoDestination) => Err(ItemError {
                code: "ErrorItemSave",
                message: "The item was not imported: no participant maps to a user with an active mailbox and the tenant has no third-party data mailbox.".into(),
            }),
            Err(route::RouteError::Store(e)) => Err(ItemError {
                code: "ErrorInternalServerError",
                message: format!("The item was not imported: {e}"),
            }),
        });
        match routed {
            Ok((item, destinations)) => {
                let id = ids.next_id();
                let record = item_record(
                    id,
                    tenant.id,
                    Some(principal.app_id.0),
                    correlation_id,
                    received,
                    &item,
                    &destinations,
                );
                // One id per `t:FileAttachment` of the request, in its order (the Managed API
                // matches them to its attachment collection, count and order); the parts of a
                // `MimeContent`, stored first, have none.
                let listed = create.items.get(index).map_or(0, |m| m.attachments.len());
                let stored = item.attachments.len();
                results.push(ItemResult::Created {
                    item_id: id.to_string(),
                    change_key: change_key(id),
                    attachment_ids: (stored.saturating_sub(listed)..stored)
                        .map(|n| attachment_id(id, n))
                        .collect(),
                });
                outcomes.push(ItemOutcomeRecord::Stored {
                    index,
                    item_id: id,
                    copies: record.copies.clone(),
                });
                let contents = item.attachments.into_iter().map(|a| a.content).collect();
                items.push((record, contents));
            }
            Err(error) => {
                results.push(ItemResult::Failed {
                    code: error.code.to_string(),
                    message: error.message.clone(),
                });
                outcomes.push(ItemOutcomeRecord::Failed {
                    index,
                    code: error.code.to_string(),
                    message: error.message,
                });
            }
        }
    }

    let stored = items.len();
    let outcome = match (stored, outcomes.len()) {
        (0, 0) => "Success",
        (0, _) => "Failed",
        (s, n) if s == n => "Success",
        _ => "PartialSuccess",
    };
    let record = IngestionRecord {
        correlation_id,
        tenant: tenant.id,
        app_id: Some(principal.app_id.0),
        received,
        operation: "CreateItem".into(),
        http_status: 200,
        outcome: outcome.into(),
        items: outcomes,
        error: None,
    };
    let commit = IngestionCommit {
        record,
        items,
        after: Some(crate::search::indexer(state)),
    };
    match connector {
        // The request is one import of the app's data connector in the tenant, written with it.
        Some(c) => {
            let import = ImportRecord::partner(c.id, correlation_id, &commit.record.items);
            let commit = ImportCommit {
                ingestion: commit,
                import,
                seen: Vec::new(),
                consumed: Vec::new(),
                next_run: None,
                requires_connector: false,
            };
            if !store.commit_import(commit).await? {
                warn!(connector = %c.id, "the connector was deleted meanwhile: no import recorded");
            }
        }
        None => store.commit_ingestion(commit).await?,
    }
    let span = tracing::Span::current();
    span.record("items", results.len());
    span.record("stored", stored);
    debug!(outcome, "CreateItem committed");
    let tally = ItemTally {
        stored: stored as u64,
        rejected: results
            .iter()
            .filter_map(|r| match r {
                ItemResult::Failed { code, .. } => Some(code.clone()),
                ItemResult::Created { .. } => None,
            })
            .collect(),
    };
    Ok(Answer {
        xml: reply::create_item(&results),
        items: Some(tally),
    })
}

/// Journals a CreateItem request refused whole: nothing of it is stored, the journal still
/// tells what happened. A journal write that fails is logged; the client still gets the
/// refusal, which is what happened to its request.
async fn journal_refusal(
    store: &crate::store::Store,
    principal: &Principal,
    correlation_id: Uuid,
    http_status: u16,
    reason: String,
) {
    let record = IngestionRecord {
        correlation_id,
        tenant: principal.tenant.0,
        app_id: Some(principal.app_id.0),
        received: Utc::now(),
        operation: "CreateItem".into(),
        http_status,
        outcome: "Refused".into(),
        items: Vec::new(),
        error: Some(reason),
    };
    if let Err(e) = store.record_ingestion(&record).await {
        tracing::warn!(error = %e, "could not record the refusal in the ingestion journal");
    }
}

/// The storage record of a validated item with its destinations (one copy each).
pub(crate) fn item_record(
    id: Uuid,
    tenant: Uuid,
    app_id: Option<Uuid>,
    correlation_id: Uuid,
    received: chrono::DateTime<Utc>,
    item: &Item,
    destinations: &[Destination],
) -> ItemRecord {
    let address = |p: &crate::domain::Participant| AddressRecord {
        name: p.name.clone(),
        address: p.address.clone(),
    };
    ItemRecord {
        id,
        tenant,
        correlation_id,
        app_id,
        received,
        item_class: item.class.as_sent.clone(),
        searched_item_class: item.class.searched(),
        kind: "externaldata".into(),
        source: item.class.source.clone(),
        event: item.class.event.clone(),
        subject: item.subject.clone(),
        body: item.body.as_ref().map(|b| b.content.clone()),
        body_type: item.body.as_ref().map(|b| match b.format {
            crate::domain::BodyFormat::Text => "Text".to_string(),
            crate::domain::BodyFormat::Html => "HTML".to_string(),
        }),
        from: address(&item.from),
        sender: item.sender.as_ref().map(address),
        to: item.to.iter().map(address).collect(),
        cc: item.cc.iter().map(address).collect(),
        bcc: item.bcc.iter().map(address).collect(),
        sent: item.sent,
        created: item.created,
        internet_message_id: item.internet_message_id.clone(),
        attachments: item
            .attachments
            .iter()
            .map(|a| AttachmentMeta {
                name: a.name.clone(),
                content_type: a.content_type.clone(),
                size: a.content.len() as u64,
                content_id: a.content_id.clone(),
                is_inline: a.is_inline,
            })
            .collect(),
        extended_properties: item
            .extended_properties
            .iter()
            .map(|p| ExtendedPropertyRecord {
                tag: p.tag,
                name: p.name.clone(),
                property_type: p.property_type.clone(),
                values: p.values.clone(),
            })
            .collect(),
        from_mime: item.from_mime,
        size: item.size as u64,
        copies: destinations
            .iter()
            .map(|d| CopyRecord {
                mailbox: d.mailbox.clone(),
                folder: d.folder.path(),
            })
            .collect(),
    }
}

/// EWS change keys are opaque; ours is stable per item.
fn change_key(id: Uuid) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(&id.as_bytes()[..12])
}

/// Attachment ids name the item and the attachment's position: `{item}.{n}`.
fn attachment_id(item: Uuid, n: usize) -> String {
    format!("{item}.{n}")
}

/// Distinguished folders a client may ask for, with their path in our store.
fn distinguished(
    id: &str,
) -> Option<(
    &'static str,
    Option<Folder>,
    &'static str,
    Option<&'static str>,
)> {
    // (display name, stored folder, folder class, parent distinguished id)
    match id.to_ascii_lowercase().as_str() {
        "root" => Some(("Root", None, "", None)),
        "msgfolderroot" => Some(("Top of Information Store", None, "IPF.Note", Some("root"))),
        "inbox" => Some((
            "Inbox",
            Some(Folder::Inbox),
            "IPF.Note",
            Some("msgfolderroot"),
        )),
        "recoverableitemspurges" => Some((
            "Purges",
            Some(Folder::Purges),
            "",
            Some("recoverableitemsroot"),
        )),
        _ => None,
    }
}

fn folder_id(mailbox: &str, distinguished_id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{mailbox}/{distinguished_id}"))
}

/// The mailbox and distinguished folder of an id made by [`folder_id`].
fn parse_folder_id(id: &str) -> Option<(String, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id.trim().trim_end_matches('='))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (mailbox, folder) = text.rsplit_once('/')?;
    (!mailbox.is_empty() && !folder.is_empty()).then(|| (mailbox.to_string(), folder.to_string()))
}

fn get_folder(
    state: &AppState,
    principal: &Principal,
    impersonated: &Option<String>,
    folders: &[FolderRef],
) -> Result<String, IngestError> {
    let mut results = Vec::with_capacity(folders.len());
    // A folder named twice is counted once.
    let mut described = std::collections::HashMap::new();
    for folder in folders {
        results.push(match folder {
            FolderRef::Distinguished { id, mailbox } => {
                let mailbox = mailbox.clone().or_else(|| impersonated.clone());
                let key = (id.to_ascii_lowercase(), mailbox.clone());
                match described.get(&key) {
                    Some(result) => FolderResult::clone(result),
                    None => {
                        let result = describe_folder(state, principal, id, mailbox.as_deref())?;
                        described.insert(key, result.clone());
                        result
                    }
                }
            }
            // One of the ids this service answered: the mailbox and the distinguished folder.
            FolderRef::Id(id) => match parse_folder_id(id) {
                Some((mailbox, distinguished)) => {
                    let key = (distinguished.to_ascii_lowercase(), Some(mailbox.clone()));
                    match described.get(&key) {
                        Some(result) => FolderResult::clone(result),
                        None => {
                            let result =
                                describe_folder(state, principal, &distinguished, Some(&mailbox))?;
                            described.insert(key, result.clone());
                            result
                        }
                    }
                }
                None => FolderResult::Failed {
                    code: "ErrorInvalidIdMalformed".into(),
                    message: "Id is malformed.".into(),
                },
            },
        });
    }
    Ok(reply::get_folder(&results))
}

fn describe_folder(
    state: &AppState,
    principal: &Principal,
    id: &str,
    mailbox: Option<&str>,
) -> Result<FolderResult, IngestError> {
    let user = match mailbox {
        Some(address) => state.store.user_by_address(principal.tenant, address)?,
        None => None,
    };
    let Some(user) = user.filter(|u| u.mailbox_enabled) else {
        return Ok(FolderResult::Failed {
            code: "ErrorNonExistentMailbox".into(),
            message: format!(
                "No mailbox with SMTP address {} exists in this tenant.",
                mailbox.unwrap_or("(none given)")
            ),
        });
    };
    let Some((display_name, stored, class, parent)) = distinguished(id) else {
        return Ok(FolderResult::Failed {
            code: "ErrorFolderNotFound".into(),
            message: format!("The distinguished folder '{id}' is not available in this service."),
        });
    };
    let upn = user.user_principal_name.to_lowercase();
    let total = stored.map_or(0, |f| {
        state.store.folder_count(principal.tenant, &upn, &f.path())
    });
    Ok(FolderResult::Found(FolderInfo {
        folder_id: folder_id(&upn, id),
        change_key: "AQAAAA==".into(),
        parent_folder_id: parent.map(|p| folder_id(&upn, p)),
        display_name: display_name.into(),
        folder_class: (!class.is_empty()).then(|| class.to_string()),
        total_count: total as u64,
        child_folder_count: 0,
        unread_count: 0,
    }))
}

async fn create_attachment(
    state: &AppState,
    principal: &Principal,
    create: CreateAttachment,
) -> Result<String, IngestError> {
    let parent = Uuid::parse_str(create.parent_item_id.trim()).ok();
    let item = match parent {
        Some(id) => state
            .store
            .item(id)?
            .filter(|i| i.tenant == principal.tenant.0),
        None => None,
    };
    let mut results = Vec::with_capacity(create.attachments.len());
    for attachment in create.attachments {
        let Some(item) = &item else {
            results.push(AttachmentResult::Failed {
                code: "ErrorItemNotFound".into(),
                message: "The specified parent item could not be found.".into(),
            });
            continue;
        };
        let meta = AttachmentMeta {
            name: attachment.name.unwrap_or_else(|| "attachment".into()),
            content_type: attachment
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            size: attachment.content.len() as u64,
            content_id: attachment.content_id,
            is_inline: attachment.is_inline,
        };
        match state
            .store
            .add_attachment(
                item.id,
                meta,
                attachment.content,
                MAX_ITEM_BYTES as u64,
                // The item changes: it is re-indexed (attachment names, hasattachment).
                Some(crate::search::on_items_changed(state)),
            )
            .await
        {
            Ok(n) => results.push(AttachmentResult::Created {
                attachment_id: attachment_id(item.id, n),
                root_item_id: item.id.to_string(),
                root_item_change_key: change_key(item.id),
            }),
            Err(StoreError::Conflict(message)) => results.push(AttachmentResult::Failed {
                code: "ErrorMessageSizeExceeded".into(),
                message: format!("The attachment was not added: {message}."),
            }),
            Err(e) => {
                warn!(error = %e, "CreateAttachment failed");
                let stored_before = results
                    .iter()
                    .any(|r| matches!(r, AttachmentResult::Created { .. }));
                if !stored_before {
                    // Nothing of the request is stored (or, OutcomeUnknown, it says so).
                    return Err(e.into());
                }
                // Earlier attachments are stored: the reply must say so, attachment by
                // attachment, as EWS answers CreateAttachment; this one failed.
                let message = match e {
                    StoreError::OutcomeUnknown(_) => {
                        "An internal server error occurred midway: the attachment may have been added."
                    }
                    _ => "An internal server error occurred: the attachment was not added.",
                };
                results.push(AttachmentResult::Failed {
                    code: "ErrorInternalServerError".into(),
                    message: message.into(),
                });
            }
        }
    }
    Ok(reply::create_attachment(&results))
}
