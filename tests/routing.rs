//! Routing: copies go to the Purges folder of every mapped participant with an active mailbox,
//! one per user; when nobody maps, to the Inbox of the third-party data mailbox.

mod common;

use common::*;

fn copies(server: &Server, correlation: &str) -> Vec<(String, String)> {
    let record = server.ingestion(correlation);
    let mut out: Vec<(String, String)> = record["items"][0]["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["mailbox"].as_str().unwrap().to_string(),
                c["folder"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn purges(mailbox: &str) -> (String, String) {
    (mailbox.to_string(), "Recoverable Items/Purges".to_string())
}

#[test]
fn every_mapped_participant_gets_one_copy_by_smtp_proxy_or_external_identity() {
    let server = Server::start(&[]);
    let token = server.token();
    let msg = Msg {
        from: Some("@alice_contoso".into()), // external identity -> alice
        to: vec!["BOB@contoso.onmicrosoft.com".into()], // proxy, other case -> bob
        cc: vec!["alice.wilber@contoso.com".into()], // proxy -> alice again
        bcc: vec![
            "8F14E45F-CEEA-467F-A9F0-3B2C1D6A5E71".into(),
            "dave@contoso.com".into(),
        ], // carol; dave inactive
        ..Msg::default()
    };
    let reply = server.ews(&token, &create_item(&[msg.xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        copies(&server, &reply.correlation_id().unwrap()),
        vec![
            purges("alice@contoso.com"),
            purges("bob@contoso.com"),
            purges("carol@contoso.com")
        ]
    );
}

#[test]
fn an_item_with_no_mapped_participant_goes_to_the_third_party_mailbox_inbox() {
    let server = Server::start(&[]);
    let token = server.token();
    let msg = Msg {
        from: Some("someone@twitter.example".into()),
        to: vec!["else@twitter.example".into(), "dave@contoso.com".into()],
        ..Msg::default()
    };
    let reply = server.ews(&token, &create_item(&[msg.xml()]));
    assert_eq!(
        copies(&server, &reply.correlation_id().unwrap()),
        vec![(
            "thirdpartydata@contoso.com".to_string(),
            "Inbox".to_string()
        )]
    );
    assert_eq!(
        server.folder_count(&token, "thirdpartydata@contoso.com", "inbox"),
        1
    );
    assert_eq!(
        server.folder_count(
            &token,
            "thirdpartydata@contoso.com",
            "recoverableitemspurges"
        ),
        0
    );
}

#[test]
fn a_sender_outside_the_tenant_domains_is_an_ordinary_participant() {
    let server = Server::start(&[]);
    let token = server.token();
    let msg = Msg {
        from: Some("partner@fabrikam.example".into()),
        to: vec!["carol@contoso.com".into()],
        ..Msg::default()
    };
    let reply = server.ews(&token, &create_item(&[msg.xml()]));
    assert_eq!(
        copies(&server, &reply.correlation_id().unwrap()),
        vec![purges("carol@contoso.com")]
    );
}

/// GetFolder by a `t:FolderId` this service answered resolves it again (what
/// `folder.refresh()` of exchangelib or `Folder.Bind` of the EWS Managed API send): same
/// folder, same count, no impersonation needed. A malformed id is `ErrorInvalidIdMalformed`; a
/// well-formed id of a folder the service does not serve (the Purges folder's parent) is
/// `ErrorFolderNotFound`; an id of a mailbox of another tenant is `ErrorNonExistentMailbox`.
#[test]
fn get_folder_resolves_the_folder_ids_it_answered() {
    let server = Server::start(&[]);
    let token = server.token();
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let first = server.ews(
        &token,
        &get_folder("alice@contoso.com", "recoverableitemspurges"),
    );
    let id = between(&first.body, "<t:FolderId Id=\"", "\"").expect("FolderId");
    let parent = between(&first.body, "<t:ParentFolderId Id=\"", "\"").expect("ParentFolderId");
    let count = between(&first.body, "TotalCount>", "<").expect("count");
    assert_eq!(count, "1");
    let by_ids = |ids: &[&str]| {
        let ids: String = ids
            .iter()
            .map(|id| format!(r#"<t:FolderId Id="{id}" ChangeKey="AQAAAA=="/>"#))
            .collect();
        server.ews(
            &token,
            &format!(
                r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header><s:Body><m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape><m:FolderIds>{ids}</m:FolderIds></m:GetFolder></s:Body></s:Envelope>"#
            ),
        )
    };
    use base64::Engine;
    let foreign = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode("someone@fabrikam.example/recoverableitemspurges");
    let reply = by_ids(&[&id, "not an id!", &parent, &foreign]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let messages: Vec<&str> = reply
        .body
        .split("<m:GetFolderResponseMessage ")
        .skip(1)
        .collect();
    assert_eq!(messages.len(), 4, "{}", reply.body);
    assert!(
        messages[0].contains("ResponseClass=\"Success\""),
        "{}",
        messages[0]
    );
    assert!(messages[0].contains(&format!("<t:FolderId Id=\"{id}\"")));
    assert!(messages[0].contains("TotalCount>1<"), "{}", messages[0]);
    assert!(
        messages[1].contains(">ErrorInvalidIdMalformed<"),
        "{}",
        messages[1]
    );
    assert!(
        messages[2].contains(">ErrorFolderNotFound<"),
        "{}",
        messages[2]
    );
    assert!(
        messages[3].contains(">ErrorNonExistentMailbox<"),
        "{}",
        messages[3]
    );
}
