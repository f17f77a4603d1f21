//! The documented rules of the ingestion endpoint, each proven over the wire against the real
//! server: mandatory properties, message class, size, sender rule, schema errors, routing.

mod common;

use common::*;

fn item_count(server: &Server, token: &str, mailbox: &str, folder: &str) -> u64 {
    server.folder_count(token, mailbox, folder)
}

#[test]
fn a_valid_batch_is_acknowledged_with_ids_in_order_and_a_correlation_id() {
    let server = Server::start(&[]);
    let token = server.token();
    let messages: Vec<String> = (0..3)
        .map(|n| {
            Msg {
                subject: Some(format!("item {n}")),
                ..Msg::default()
            }
            .xml()
        })
        .collect();
    let reply = server.ews(&token, &create_item(&messages));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.headers.get("content-type").unwrap(),
        "text/xml; charset=utf-8"
    );
    let correlation = reply.correlation_id().expect("x-IngestionCorrelationID");
    assert!(uuid::Uuid::parse_str(&correlation).is_ok());
    assert!(reply.body.contains("ServerVersionInfo"));
    let messages = reply.messages();
    assert_eq!(messages.len(), 3);
    assert!(messages
        .iter()
        .all(|(class, code, _)| class == "Success" && code == "NoError"));

    let record = server.ingestion(&correlation);
    let items = record["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item["index"], n);
        assert_eq!(item["itemId"], messages[n].2);
        assert_eq!(item["copies"][0]["mailbox"], "alice@contoso.com");
        assert_eq!(item["copies"][0]["folder"], "Recoverable Items/Purges");
    }
    assert_eq!(record["appId"], APP_ID);
    assert_eq!(record["outcome"], "Success");
}

#[test]
fn each_missing_mandatory_property_fails_only_its_item_and_names_the_property() {
    let server = Server::start(&[]);
    let token = server.token();
    let cases = [
        (
            "FROM",
            Msg {
                from: None,
                ..Msg::default()
            },
        ),
        (
            "TO",
            Msg {
                to: vec![],
                ..Msg::default()
            },
        ),
        (
            "DATE",
            Msg {
                sent: None,
                ..Msg::default()
            },
        ),
        (
            "MESSAGECLASS",
            Msg {
                class: None,
                ..Msg::default()
            },
        ),
    ];
    let mut messages = vec![Msg::default().xml()];
    messages.extend(cases.iter().map(|(_, m)| m.xml()));
    messages.push(Msg::default().xml());
    let reply = server.ews(&token, &create_item(&messages));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let results = reply.messages();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0].0, "Success");
    assert_eq!(results[5].0, "Success");
    for (n, (property, _)) in cases.iter().enumerate() {
        let (class, code, text) = &results[n + 1];
        assert_eq!(class, "Error");
        assert_eq!(code, "ErrorItemSave");
        assert!(text.contains("not imported"), "{text}");
        assert!(
            text.contains(&format!("property {property} ")),
            "{text} should name {property}"
        );
    }
    // Only the two valid items were stored.
    assert_eq!(
        item_count(
            &server,
            &token,
            "alice@contoso.com",
            "recoverableitemspurges"
        ),
        2
    );
    let record = server.ingestion(&reply.correlation_id().unwrap());
    assert_eq!(record["outcome"], "PartialSuccess");
}

#[test]
fn optional_properties_may_be_absent() {
    let server = Server::start(&[]);
    let token = server.token();
    let bare = Msg {
        subject: None,
        body: None,
        ..Msg::default()
    };
    let reply = server.ews(&token, &create_item(&[bare.xml()]));
    assert_eq!(reply.messages()[0].0, "Success", "{}", reply.body);
}

#[test]
fn message_class_must_begin_with_ipm_note_and_name_a_source() {
    let server = Server::start(&[]);
    let token = server.token();
    let classes = [
        ("IPM.NOTE.Twitter.Tweet", true),
        ("ipm.note.SMS", true),
        ("IPM.Note.Bloomberg.Message.Chat", true),
        ("IPM.NOTE.Yahoo!.IM", true),
        ("IPM.NOTE.Twitter.", false),
        ("IPM.Note", false),
        ("IPM.NOTE.", false),
        ("IPM.Appointment.Twitter", false),
        ("Twitter", false),
    ];
    let messages: Vec<String> = classes
        .iter()
        .map(|(class, _)| {
            Msg {
                class: Some(class.to_string()),
                ..Msg::default()
            }
            .xml()
        })
        .collect();
    let reply = server.ews(&token, &create_item(&messages));
    let results = reply.messages();
    for ((class, ok), (response_class, _, text)) in classes.iter().zip(&results) {
        assert_eq!(response_class == "Success", *ok, "{class}: {text}");
        if !ok {
            assert!(text.contains("IPM.NOTE."), "{text}");
        }
    }
}

#[test]
fn item_class_may_come_as_extended_property_0x001a_in_hex_or_decimal() {
    let server = Server::start(&[]);
    let token = server.token();
    let with_property = |tag: &str| {
        Msg { class: None, ..Msg::default() }.xml().replace(
            "<t:DateTimeSent>",
            &format!("<t:ExtendedProperty><t:ExtendedFieldURI PropertyTag=\"{tag}\" PropertyType=\"String\"/><t:Value>IPM.Note.SMS</t:Value></t:ExtendedProperty><t:DateTimeSent>"),
        )
    };
    let reply = server.ews(
        &token,
        &create_item(&[
            with_property("0x1a"),
            with_property("26"),
            with_property("0x001A"),
        ]),
    );
    assert!(
        reply.messages().iter().all(|m| m.0 == "Success"),
        "{}",
        reply.body
    );
}

#[test]
fn an_item_over_10_mb_is_refused_and_the_rest_of_the_batch_stored() {
    let server = Server::start(&[]);
    let token = server.token();
    let big = Msg {
        attachments: vec![("big.bin".into(), vec![7u8; 10 * 1024 * 1024 + 1])],
        ..Msg::default()
    };
    let reply = server.ews(&token, &create_item(&[big.xml(), Msg::default().xml()]));
    assert_eq!(reply.status, 200);
    let results = reply.messages();
    assert_eq!(results[0].0, "Error");
    assert_eq!(results[0].1, "ErrorMessageSizeExceeded");
    assert_eq!(results[1].0, "Success");
    assert_eq!(
        item_count(
            &server,
            &token,
            "alice@contoso.com",
            "recoverableitemspurges"
        ),
        1
    );
}

#[test]
fn a_body_over_the_limit_is_refused_with_413() {
    let server = Server::start(&["--max-body-bytes", "4096"]);
    let token = server.token();
    let big = Msg {
        body: Some("x".repeat(8000)),
        ..Msg::default()
    };
    let reply = server.ews(&token, &create_item(&[big.xml()]));
    assert_eq!(reply.status, 413);
    assert!(reply.correlation_id().is_none());
    // Still up, and a small request passes.
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200);
}

#[test]
fn a_sender_of_the_tenant_without_an_active_mailbox_fails_the_whole_request_with_401() {
    let server = Server::start(&[]);
    let token = server.token();
    for sender in [
        "dave@contoso.com",
        "nobody@contoso.com",
        "DAVE@Contoso.onmicrosoft.com",
    ] {
        let good = Msg::default();
        let bad = Msg {
            from: Some(sender.into()),
            ..Msg::default()
        };
        let reply = server.ews(&token, &create_item(&[good.xml(), bad.xml()]));
        assert_eq!(reply.status, 401, "{sender}: {}", reply.body);
        assert!(reply.body.contains("One or more messages in the Request failed to be delivered to either From or Sender email address. You will need to resend your entire Request. Error: The request failed. The remote server returned an error: (401) Unauthorized."), "{}", reply.body);
        assert!(reply.correlation_id().is_none());
        // EWS clients read a fault only from a 500: the reason is in x-ms-diagnostics too.
        let diagnostics = reply.headers["x-ms-diagnostics"].to_str().unwrap();
        assert!(
            diagnostics.starts_with(
                "ErrorAccessDenied;reason=\"One or more messages in the Request failed to be delivered"
            ),
            "{diagnostics}"
        );
    }
    // Nothing of those requests was stored, not even the good item.
    assert_eq!(
        item_count(
            &server,
            &token,
            "alice@contoso.com",
            "recoverableitemspurges"
        ),
        0
    );
    // The journal records the refusals, with no item.
    let entries = server.journal(3);
    assert_eq!(entries.len(), 3, "{entries:?}");
    for entry in &entries {
        assert_eq!(entry["outcome"], "Refused", "{entry}");
        assert_eq!(entry["httpStatus"], 401);
        assert_eq!(entry["items"].as_array().unwrap().len(), 0);
    }
    // A sender of the tenant with an active mailbox, and an external sender, are fine.
    let reply = server.ews(
        &token,
        &create_item(&[Msg {
            from: Some("bob@contoso.com".into()),
            ..Msg::default()
        }
        .xml()]),
    );
    assert_eq!(reply.status, 200);
}

#[test]
fn malformed_xml_doctype_and_unknown_operations_are_soap_faults_with_500() {
    let server = Server::start(&[]);
    let token = server.token();
    let cases = [
        (
            "truncated",
            create_item(&[Msg::default().xml()])[..300].to_string(),
        ),
        (
            "doctype",
            format!(
                "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]>{}",
                &create_item(&[Msg::default().xml()])[39..]
            ),
        ),
        ("not xml", "hello".to_string()),
        (
            "wrong operation",
            create_item(&[]).replace("CreateItem", "DeleteItem"),
        ),
        (
            "body with elements",
            create_item(&[Msg::default().xml().replace(
                "<t:Body BodyType=\"Text\">hello world</t:Body>",
                "<t:Body BodyType=\"Text\"><b>hi</b></t:Body>",
            )]),
        ),
    ];
    for (name, envelope) in cases {
        let reply = server.ews(&token, &envelope);
        assert_eq!(reply.status, 500, "{name}: {}", reply.body);
        assert!(reply.body.contains("Fault>"), "{name}: {}", reply.body);
        assert!(reply.body.contains("faultstring"), "{name}");
    }
    assert_eq!(
        item_count(
            &server,
            &token,
            "alice@contoso.com",
            "recoverableitemspurges"
        ),
        0
    );
}

#[test]
fn too_many_items_in_one_request_is_a_clear_error() {
    let server = Server::start(&["--max-items-per-request", "3"]);
    let token = server.token();
    let messages: Vec<String> = (0..4).map(|_| Msg::default().xml()).collect();
    let reply = server.ews(&token, &create_item(&messages));
    assert_eq!(reply.status, 500);
    assert!(reply.body.contains("at most 3 items"), "{}", reply.body);
}

#[test]
fn the_endpoint_also_answers_at_ews_exchange_asmx_and_serves_its_wsdl() {
    let server = Server::start(&[]);
    let token = server.token();
    let response = server
        .post("/EWS/Exchange.asmx")
        .bearer_auth(&token)
        .body(create_item(&[Msg::default().xml()]))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let wsdl = server
        .get("/service/ThirdPartyIngestionService.svc?wsdl")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(wsdl.contains("definitions"));
    assert!(
        wsdl.contains(&server.url),
        "the WSDL names the address the client used"
    );
    for xsd in ["messages.xsd", "types.xsd"] {
        let response = server
            .get(&format!(
                "/service/ThirdPartyIngestionService.svc?xsd={xsd}"
            ))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.text().unwrap().contains("schema"));
    }
}

#[test]
fn create_attachment_adds_to_an_item_just_created() {
    let server = Server::start(&[]);
    let token = server.token();
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    let id = reply.item_ids().pop().unwrap();
    let envelope = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><s:Body><m:CreateAttachment><m:ParentItemId Id="{id}"/><m:Attachments><t:FileAttachment><t:Name>a.txt</t:Name><t:Content>aGVsbG8=</t:Content></t:FileAttachment></m:Attachments></m:CreateAttachment></s:Body></s:Envelope>"#
    );
    let reply = server.ews(&token, &envelope);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("AttachmentId"), "{}", reply.body);
    assert!(
        reply.body.contains(&format!("RootItemId=\"{id}\"")),
        "{}",
        reply.body
    );
    // At most 1,000 attachments in one request (each is a response message): refused whole.
    let one = r#"<t:FileAttachment><t:Name>a.txt</t:Name><t:Content>aGVsbG8=</t:Content></t:FileAttachment>"#;
    let many = envelope.replace(one, &one.repeat(1001));
    server.ews(&token, &many).assert_refused(
        500,
        "The request names 1001 attachments; at most 1000 are accepted in one CreateAttachment request.",
    );
    let item: serde_json::Value = server
        .admin(
            reqwest::Method::GET,
            &format!("/api/tenants/{TENANT}/items/{id}"),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(item["attachments"].as_array().unwrap().len(), 1, "{item}");
}

/// As Exchange: every EWS answer has a `request-id` (here the request's correlation id), and
/// a client that sends `return-client-request-id: true` gets its `client-request-id` back.
#[test]
fn answers_carry_request_id_and_echo_client_request_id_when_asked() {
    let server = Server::start(&[]);
    let token = server.token();
    let send = |token: &str, echo: Option<&str>| {
        let mut request = server
            .post(SERVICE_PATH)
            .bearer_auth(token)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("client-request-id", "6f1c2a1e-0b7e-4e43-9d0a-2f6a3c1d9e55");
        if let Some(value) = echo {
            request = request.header("return-client-request-id", value);
        }
        EwsReply::from(
            request
                .body(create_item(&[Msg::default().xml()]))
                .send()
                .expect("EWS request"),
        )
    };
    let asked = send(&token, Some("true"));
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert_eq!(
        asked.headers["client-request-id"],
        "6f1c2a1e-0b7e-4e43-9d0a-2f6a3c1d9e55"
    );
    assert_eq!(
        asked.headers["request-id"].to_str().unwrap(),
        asked.correlation_id().unwrap()
    );
    for echo in [None, Some("false")] {
        let reply = send(&token, echo);
        assert_eq!(reply.status, 200);
        assert!(!reply.headers.contains_key("client-request-id"), "{echo:?}");
        assert!(reply.headers.contains_key("request-id"));
    }
    // A client-request-id too long to echo is not.
    let long = EwsReply::from(
        server
            .post(SERVICE_PATH)
            .bearer_auth(&token)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("client-request-id", "x".repeat(300))
            .header("return-client-request-id", "true")
            .body(create_item(&[Msg::default().xml()]))
            .send()
            .expect("EWS request"),
    );
    assert_eq!(long.status, 200);
    assert!(!long.headers.contains_key("client-request-id"));
    // A refusal has them too (it has no correlation id header: nothing was stored).
    let refused = send("not.a.token", Some("true"));
    assert_eq!(refused.status, 401);
    assert!(refused.correlation_id().is_none());
    assert!(refused.headers.contains_key("request-id"));
    assert_eq!(
        refused.headers["client-request-id"],
        "6f1c2a1e-0b7e-4e43-9d0a-2f6a3c1d9e55"
    );
    // So do the endpoint's other answers: its WSDL, and a method it does not take.
    for method in [reqwest::Method::GET, reqwest::Method::PUT] {
        let answer = server
            .client()
            .request(method.clone(), format!("{}{SERVICE_PATH}?wsdl", server.url))
            .header("client-request-id", "c-1")
            .header("return-client-request-id", "true")
            .send()
            .expect("request");
        let expected = if method == reqwest::Method::GET {
            200
        } else {
            405
        };
        assert_eq!(answer.status().as_u16(), expected, "{method}");
        let id = answer.headers()["request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{method}: {id}");
        assert_eq!(answer.headers()["client-request-id"], "c-1", "{method}");
    }
}
