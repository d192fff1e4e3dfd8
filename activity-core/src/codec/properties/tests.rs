//! Property blocks against the byte vectors of OASIS MQTT 5.0 and the rules of table 2-4.

use super::*;

/// Decodes a whole block (length and properties) from `bytes`.
fn block(bytes: &[u8], context: Context) -> Result<Properties<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    let properties = Properties::decode(&mut r, context)?;
    r.finish()?;
    Ok(properties)
}

#[test]
fn variable_byte_integers_match_table_1_1() {
    // MQTT 5.0 section 1.5.5, table 1-1: the edges of each length.
    let cases: [(u32, &[u8]); 8] = [
        (0, &[0x00]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
    ];
    for (value, wire) in cases {
        assert_eq!(Reader::new(wire).var_int(), Ok(value), "{value}");
        assert_eq!(var_int_len(value), Ok(wire.len()), "{value}");
        let mut out = [0u8; 4];
        let mut w = Writer::new(&mut out);
        w.var_int(value).expect("fits");
        assert_eq!(&out[..wire.len()], wire, "{value}");
    }
    // A fifth byte is never allowed; a cut one is incomplete.
    assert_eq!(
        Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).var_int(),
        Err(DecodeError::MalformedVarInt)
    );
    assert_eq!(
        Reader::new(&[0x80, 0x80]).var_int(),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        var_int_len(MAX_VAR_INT + 1),
        Err(EncodeError::PacketTooLarge)
    );
}

#[test]
fn the_connect_example_of_section_3_1_2_12() {
    // MQTT 5.0 section 3.1.2.12, figure 3-6: properties length 5, Session Expiry Interval
    // (17) of 10 seconds.
    let wire = [0x05, 0x11, 0x00, 0x00, 0x00, 0x0A];
    let properties = block(&wire, Context::Connect).expect("valid");
    assert_eq!(properties.session_expiry_interval(), Some(10));
    assert_eq!(
        properties.iter().collect::<Vec<_>>(),
        [Property::SessionExpiryInterval(10)]
    );
    assert_eq!(properties.encoded_len(), Ok(wire.len()));
    let mut out = [0u8; 6];
    let mut w = Writer::new(&mut out);
    properties.write(&mut w).expect("fits");
    assert_eq!(out, wire);
}

/// One property of every identifier, as its bytes and its value.
fn every_property() -> Vec<(Vec<u8>, Property<'static>)> {
    vec![
        (vec![0x01, 1], Property::PayloadFormatIndicator(1)),
        (
            vec![0x02, 0, 0, 0x0E, 0x10],
            Property::MessageExpiryInterval(3600),
        ),
        (
            vec![0x03, 0, 4, b't', b'e', b'x', b't'],
            Property::ContentType("text"),
        ),
        (vec![0x08, 0, 1, b'r'], Property::ResponseTopic("r")),
        (
            vec![0x09, 0, 2, 0xDE, 0xAD],
            Property::CorrelationData(&[0xDE, 0xAD]),
        ),
        (
            vec![0x0B, 0x80, 0x01],
            Property::SubscriptionIdentifier(128),
        ),
        (
            vec![0x11, 0xFF, 0xFF, 0xFF, 0xFF],
            Property::SessionExpiryInterval(u32::MAX),
        ),
        (
            vec![0x12, 0, 2, b'i', b'd'],
            Property::AssignedClientIdentifier("id"),
        ),
        (vec![0x13, 0, 30], Property::ServerKeepAlive(30)),
        (
            vec![0x15, 0, 5, b'S', b'C', b'R', b'A', b'M'],
            Property::AuthenticationMethod("SCRAM"),
        ),
        (vec![0x16, 0, 1, 7], Property::AuthenticationData(&[7])),
        (vec![0x17, 0], Property::RequestProblemInformation(0)),
        (vec![0x18, 0, 0, 0, 5], Property::WillDelayInterval(5)),
        (vec![0x19, 1], Property::RequestResponseInformation(1)),
        (
            vec![0x1A, 0, 2, b'r', b'/'],
            Property::ResponseInformation("r/"),
        ),
        (vec![0x1C, 0, 1, b'b'], Property::ServerReference("b")),
        (vec![0x1F, 0, 2, b'o', b'k'], Property::ReasonString("ok")),
        (vec![0x21, 0, 10], Property::ReceiveMaximum(10)),
        (vec![0x22, 0, 0], Property::TopicAliasMaximum(0)),
        (vec![0x23, 0, 1], Property::TopicAlias(1)),
        (vec![0x24, 1], Property::MaximumQoS(1)),
        (vec![0x25, 0], Property::RetainAvailable(0)),
        (
            vec![0x26, 0, 1, b'k', 0, 1, b'v'],
            Property::UserProperty("k", "v"),
        ),
        (vec![0x27, 0, 0, 0x10, 0], Property::MaximumPacketSize(4096)),
        (vec![0x28, 1], Property::WildcardSubscriptionAvailable(1)),
        (vec![0x29, 0], Property::SubscriptionIdentifierAvailable(0)),
        (vec![0x2A, 1], Property::SharedSubscriptionAvailable(1)),
    ]
}

/// The contexts of table 2-4 where each identifier may appear.
fn allowed_in(id: u8) -> &'static [Context] {
    use Context::*;
    match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => &[Publish, Will],
        0x0B => &[Publish, Subscribe],
        0x11 => &[Connect, ConnAck, Disconnect],
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => &[ConnAck],
        0x15 | 0x16 => &[Connect, ConnAck, Auth],
        0x17 | 0x19 => &[Connect],
        0x18 => &[Will],
        0x1C => &[ConnAck, Disconnect],
        0x1F => &[ConnAck, Ack, SubAck, UnsubAck, Disconnect, Auth],
        0x21 | 0x22 | 0x27 => &[Connect, ConnAck],
        0x23 => &[Publish],
        0x26 => &[
            Connect,
            Will,
            ConnAck,
            Publish,
            Ack,
            Subscribe,
            SubAck,
            Unsubscribe,
            UnsubAck,
            Disconnect,
            Auth,
        ],
        _ => &[],
    }
}

const CONTEXTS: [Context; 11] = [
    Context::Connect,
    Context::Will,
    Context::ConnAck,
    Context::Publish,
    Context::Ack,
    Context::Subscribe,
    Context::SubAck,
    Context::Unsubscribe,
    Context::UnsubAck,
    Context::Disconnect,
    Context::Auth,
];

#[test]
fn every_identifier_decodes_where_table_2_4_allows_it_and_nowhere_else() {
    for (wire, property) in every_property() {
        assert_eq!(wire[0], property.id());
        assert_eq!(property.encoded_len(), Ok(wire.len()), "{property:?}");
        let mut out = vec![0u8; wire.len()];
        assert_eq!(encode_properties(&[property], &mut out), Ok(wire.len()));
        assert_eq!(out, wire, "{property:?} encodes as its bytes");
        for context in CONTEXTS {
            let parsed = Properties::parse(&wire, context);
            if allowed_in(property.id()).contains(&context) {
                let parsed = parsed.unwrap_or_else(|e| panic!("{property:?} in {context:?}: {e}"));
                assert_eq!(parsed.iter().collect::<Vec<_>>(), [property]);
            } else {
                assert_eq!(
                    parsed,
                    Err(DecodeError::PropertyNotAllowed(property.id())),
                    "{property:?} in {context:?}"
                );
            }
        }
    }
}

#[test]
fn unknown_identifiers_are_malformed() {
    for id in [0x00u8, 0x04, 0x0A, 0x10, 0x14, 0x1B, 0x1D, 0x20, 0x2B, 0x7F] {
        assert_eq!(
            Properties::parse(&[id, 0, 0, 0, 0], Context::Connect),
            Err(DecodeError::UnknownProperty(id))
        );
    }
    // An identifier longer than one byte is no identifier the spec defines.
    assert_eq!(
        Properties::parse(&[0x80, 0x02, 0], Context::Connect),
        Err(DecodeError::UnknownProperty(0xFF))
    );
    assert!(!DecodeError::UnknownProperty(0).is_protocol_error());
}

#[test]
fn a_property_twice_is_a_protocol_error_except_where_the_spec_repeats_it() {
    let twice = [0x21, 0, 5, 0x21, 0, 6];
    assert_eq!(
        Properties::parse(&twice, Context::Connect),
        Err(DecodeError::DuplicateProperty(0x21))
    );
    assert!(DecodeError::DuplicateProperty(0x21).is_protocol_error());
    // User properties repeat anywhere, in order, with repeated names too.
    let users = [
        0x26, 0, 1, b'a', 0, 1, b'1', 0x26, 0, 1, b'a', 0, 1, b'2', 0x26, 0, 1, b'b', 0, 0,
    ];
    let properties = Properties::parse(&users, Context::Publish).expect("valid");
    assert_eq!(
        properties.user_properties().collect::<Vec<_>>(),
        [("a", "1"), ("a", "2"), ("b", "")]
    );
    assert_eq!(properties.user_property("a"), Some("1"));
    assert_eq!(properties.user_property("c"), None);
    // Subscription identifiers repeat in a PUBLISH (one per matching subscription, 3.3.2.3.8),
    // not in a SUBSCRIBE (3.8.2.1.2).
    let ids = [0x0B, 1, 0x0B, 2];
    let properties = Properties::parse(&ids, Context::Publish).expect("valid");
    assert_eq!(properties.subscription_identifier(), Some(1));
    assert_eq!(properties.iter().count(), 2);
    assert_eq!(
        Properties::parse(&ids, Context::Subscribe),
        Err(DecodeError::DuplicateProperty(0x0B))
    );
}

#[test]
fn values_out_of_range_are_protocol_errors() {
    let cases: [(&[u8], Context, u8); 9] = [
        (&[0x21, 0, 0], Context::Connect, 0x21),
        (&[0x27, 0, 0, 0, 0], Context::Connect, 0x27),
        (&[0x23, 0, 0], Context::Publish, 0x23),
        (&[0x0B, 0], Context::Subscribe, 0x0B),
        (&[0x01, 2], Context::Publish, 0x01),
        (&[0x17, 2], Context::Connect, 0x17),
        (&[0x19, 0xFF], Context::Connect, 0x19),
        (&[0x24, 2], Context::ConnAck, 0x24),
        (&[0x2A, 7], Context::ConnAck, 0x2A),
    ];
    for (wire, context, id) in cases {
        let error = Properties::parse(wire, context).expect_err("out of range");
        assert_eq!(error, DecodeError::InvalidPropertyValue(id), "{wire:?}");
        assert!(error.is_protocol_error());
    }
}

#[test]
fn bad_lengths_and_strings_are_malformed() {
    // The block's length runs past the packet.
    assert_eq!(
        block(&[0x05, 0x11, 0, 0], Context::Connect),
        Err(DecodeError::Truncated)
    );
    // A value runs past the block.
    assert_eq!(
        Properties::parse(&[0x11, 0, 0, 0], Context::Connect),
        Err(DecodeError::Truncated)
    );
    // A string's length runs past the block; a string with U+0000; invalid UTF-8.
    assert_eq!(
        Properties::parse(&[0x1F, 0, 9, b'x'], Context::Ack),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        Properties::parse(&[0x1F, 0, 1, 0], Context::Ack),
        Err(DecodeError::InvalidUtf8)
    );
    assert_eq!(
        Properties::parse(&[0x26, 0, 1, 0xFF, 0, 0], Context::Ack),
        Err(DecodeError::InvalidUtf8)
    );
    // The block's length is not a Variable Byte Integer.
    assert_eq!(
        block(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01], Context::Connect),
        Err(DecodeError::MalformedVarInt)
    );
    assert!(!DecodeError::Truncated.is_protocol_error());
}

#[test]
fn an_empty_block_is_one_zero_byte() {
    let properties = block(&[0x00], Context::Disconnect).expect("valid");
    assert!(properties.is_empty());
    assert_eq!(properties, Properties::EMPTY);
    assert_eq!(properties.iter().next(), None);
    assert_eq!(Properties::EMPTY.encoded_len(), Ok(1));
}

#[test]
fn a_connack_block_the_server_builds_reads_back() {
    let sent = [
        Property::AssignedClientIdentifier("auto-000000000000002a"),
        Property::ServerKeepAlive(60),
        Property::TopicAliasMaximum(16),
        Property::ReceiveMaximum(64),
        Property::MaximumPacketSize(1_048_576),
        Property::ReasonString("welcome"),
    ];
    let mut out = [0u8; 128];
    let len = encode_properties(&sent, &mut out).expect("fits");
    assert_eq!(properties_len(&sent), Ok(len));
    let properties = Properties::parse(&out[..len], Context::ConnAck).expect("valid");
    assert_eq!(properties.iter().collect::<Vec<_>>(), sent);
    assert_eq!(properties.receive_maximum(), Some(64));
    assert_eq!(properties.topic_alias_maximum(), Some(16));
    assert_eq!(properties.maximum_packet_size(), Some(1_048_576));
    assert_eq!(
        encode_properties(&sent, &mut out[..len - 1]),
        Err(EncodeError::BufferTooSmall { needed: len })
    );
}

#[test]
fn typed_getters_find_their_property() {
    let wire = [
        0x02, 0, 0, 0, 9, // message expiry 9
        0x23, 0, 3, // topic alias 3
        0x0B, 5, // subscription identifier 5
    ];
    let publish = Properties::parse(&wire, Context::Publish).expect("valid");
    assert_eq!(publish.message_expiry_interval(), Some(9));
    assert_eq!(publish.topic_alias(), Some(3));
    assert_eq!(publish.subscription_identifier(), Some(5));
    assert_eq!(publish.session_expiry_interval(), None);
    let will = Properties::parse(&[0x18, 0, 0, 1, 0], Context::Will).expect("valid");
    assert_eq!(will.will_delay_interval(), Some(256));
    let auth = Properties::parse(&[0x15, 0, 1, b'x'], Context::Auth).expect("valid");
    assert_eq!(auth.authentication_method(), Some("x"));
}

#[test]
fn a_built_message_expiry_block_is_what_parse_accepts() {
    for seconds in [0, 1, 300, 0x0102_0304, u32::MAX] {
        let mut raw = [0; 5];
        let built = Properties::message_expiry(&mut raw, seconds);
        let parsed = Properties::parse(built.as_bytes(), Context::Publish).expect("valid");
        assert_eq!(parsed.message_expiry_interval(), Some(seconds));
        assert_eq!(built.iter().count(), 1);
    }
    let mut raw = [0; 5];
    assert_eq!(
        Properties::message_expiry(&mut raw, 0x0102_0304).as_bytes(),
        [0x02, 1, 2, 3, 4]
    );
}
