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
