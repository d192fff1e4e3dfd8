use super::*;

use proptest::prelude::*;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

fn s(id: &str) -> OwnedId {
    OwnedId::Str(String::try_from(id).unwrap())
}

fn ids(payload: &str) -> Option<(OwnedId, OwnedId)> {
    parse_envelope(payload.as_bytes()).map(|e| (e.product_id, e.message_id))
}

#[test]
fn example_payload() {
    let envelope = parse_envelope(br#"{"product_id":"p1","message_id":"m42","payload":"data"}"#)
        .expect("the documented example parses");
    assert_eq!(envelope.product_id, s("p1"));
    assert_eq!(envelope.message_id, s("m42"));
    assert_eq!(envelope.product_id.as_id(), Id::Str("p1"));
    assert_eq!(envelope.message_id.as_id(), Id::Str("m42"));
}

#[test]
fn integer_ids() {
    assert_eq!(
        ids(r#"{"message_id":-9223372036854775808,"product_id":9223372036854775807}"#),
        Some((OwnedId::Int(i64::MAX), OwnedId::Int(i64::MIN)))
    );
    assert_eq!(
        ids(r#" {"product_id" : 0 , "message_id":-0 } "#),
        Some((OwnedId::Int(0), OwnedId::Int(0)))
    );
    assert_eq!(OwnedId::Int(7).as_id(), Id::Int(7));
    assert_eq!(
        ids("\t\r\n{\"product_id\":\"a\",\"message_id\":12}\n"),
        Some((s("a"), OwnedId::Int(12)))
    );
}

#[test]
fn bad_numbers() {
    for id in [
        "9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
        // 2^64 and 2^64 + 9: they wrap a u64 to 0 and 9, the digit count still says too large.
        "18446744073709551616",
        "-18446744073709551625",
        "1.0",
        "1e3",
        "1E+3",
        "-1.5e-3",
        "01",
        "-",
        "+1",
        ".5",
        "1.",
        "1e",
        "0x10",
        "--1",
    ] {
        let payload = format!(r#"{{"product_id":{id},"message_id":1}}"#);
        assert_eq!(ids(&payload), None, "{payload}");
    }
}

#[test]
fn other_id_types() {
    for id in [
        "true",
        "false",
        "null",
        "{}",
        "[]",
        r#"{"a":1}"#,
        "[1]",
        r#""""#,
    ] {
        let payload = format!(r#"{{"product_id":"p","message_id":{id}}}"#);
        assert_eq!(ids(&payload), None, "{payload}");
    }
}

#[test]
fn escapes() {
    assert_eq!(
        ids(
            r#"{"product\u005fid":"a\"\\\/\b\f\n\r\t","\u006d\u0065ssage_id":"\u00e9\u20ac\ud83d\ude00"}"#
        ),
        Some((s("a\"\\/\u{8}\u{c}\n\r\t"), s("é€😀")))
    );
    // Lone surrogates, bad escapes, raw control characters.
    for bad in [
        r#""\ud83d""#,
        r#""\ude00""#,
        r#""\ud83dx""#,
        r#""\ud83d\u0041""#,
        r#""\x""#,
        r#""\u12""#,
        r#""\u12g4""#,
        "\"a\u{1}b\"",
        "\"a\tb\"",
    ] {
        let payload = format!(r#"{{"product_id":{bad},"message_id":1}}"#);
        assert_eq!(ids(&payload), None, "{payload}");
        let payload = format!(r#"{{"product_id":"p","message_id":1,"x":{bad}}}"#);
        assert_eq!(ids(&payload), None, "{payload}");
        let payload = format!(r#"{{"product_id":"p","message_id":1,{bad}:0}}"#);
        assert_eq!(ids(&payload), None, "{payload}");
    }
}

#[test]
fn key_comparison_is_exact() {
    for key in [
        "product_i",
        "product_idd",
        "Product_id",
        "product_id\\u0000",
        "product id",
    ] {
        let payload = format!(r#"{{"{key}":"p","message_id":1}}"#);
        assert_eq!(ids(&payload), None, "{payload}");
    }
}

#[test]
fn id_capacity() {
    let max = "x".repeat(ID_CAPACITY);
    let payload = format!(r#"{{"product_id":"{max}","message_id":1}}"#);
    assert_eq!(ids(&payload), Some((s(&max), OwnedId::Int(1))));
    let over = "x".repeat(ID_CAPACITY + 1);
    let payload = format!(r#"{{"product_id":"{over}","message_id":1}}"#);
    assert_eq!(ids(&payload), None);
    // The limit is on unescaped UTF-8 bytes: 32 two-byte characters fit, 33 do not.
    let payload = format!(
        r#"{{"product_id":"{}","message_id":1}}"#,
        "\\u00e9".repeat(32)
    );
    assert_eq!(ids(&payload), Some((s(&"é".repeat(32)), OwnedId::Int(1))));
    let payload = format!(r#"{{"product_id":"{}","message_id":1}}"#, "é".repeat(33));
    assert_eq!(ids(&payload), None);
}

#[test]
fn nested_junk_is_skipped() {
    let payload = r#"{
        "a": {"product_id": 1, "message_id": [1, 2, {"x": null}]},
        "product_id": "p",
        "b": [[], {}, [[true, false, null]], -1.25e+10, "s\"}]"],
        "message_id": 5,
        "c": {"": {"": {}}},
        "a": 1
    }"#;
    assert_eq!(ids(payload), Some((s("p"), OwnedId::Int(5))));
}

#[test]
fn malformed_nested_values() {
    for junk in [
        "[1,]",
        "[,1]",
        "{,}",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{"a":}"#,
        "[1 2]",
        "{1:2}",
        "[}",
        "{]",
        "tru",
        "nul",
        "True",
        "[",
        "{",
        r#"{"a":1"#,
    ] {
        let payload = format!(r#"{{"product_id":"p","message_id":1,"junk":{junk}}}"#);
        assert_eq!(ids(&payload), None, "{payload}");
    }
}

#[test]
fn truncations_never_parse() {
    let full = r#"{"product_id":"p\u00e9","message_id":-42,"n":[{"a":1.5e3}]}"#;
    assert!(parse_envelope(full.as_bytes()).is_some());
    for end in 0..full.len() {
        assert_eq!(parse_envelope(&full.as_bytes()[..end]), None, "{end}");
    }
}

#[test]
fn duplicates() {
    for payload in [
        r#"{"product_id":"p","message_id":1,"product_id":"p"}"#,
        r#"{"product_id":"p","message_id":1,"message_id":2}"#,
        r#"{"product_id":"p","message_id":1,"message\u005fid":1}"#,
        r#"{"product_id":1.5,"product_id":"p","message_id":1}"#,
    ] {
        assert_eq!(ids(payload), None, "{payload}");
    }
}

#[test]
fn non_object_roots() {
    for payload in [
        "",
        " ",
        "null",
        "1",
        r#""product_id""#,
        r#"[{"product_id":"p","message_id":1}]"#,
        "{}",
        r#"{"product_id":"p"}"#,
        r#"{"message_id":"m"}"#,
        r#"{"product_id":"p","message_id":1} x"#,
        r#"{"product_id":"p","message_id":1}{}"#,
        "\u{feff}{\"product_id\":\"p\",\"message_id\":1}",
        "\u{c}{\"product_id\":\"p\",\"message_id\":1}",
    ] {
        assert_eq!(ids(payload), None, "{payload:?}");
    }
}

#[test]
fn invalid_utf8() {
    assert_eq!(
        parse_envelope(b"{\"product_id\":\"p\xff\",\"message_id\":1}"),
        None
    );
    assert_eq!(
        parse_envelope(b"{\"product_id\":\"p\",\"message_id\":1,\"x\":\"\xc3\"}"),
        None
    );
    assert_eq!(
        parse_envelope(b"{\"product_id\":\"p\",\"message_id\":1}\xff"),
        None
    );
}

#[test]
fn deep_nesting() {
    let nested = |levels: usize| {
        format!(
            r#"{{"product_id":"p","message_id":1,"x":{}{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    // The top-level object is level 1, so 31 more levels are accepted.
    assert!(ids(&nested(MAX_DEPTH - 1)).is_some());
    assert_eq!(ids(&nested(MAX_DEPTH)), None);
    assert_eq!(ids(&nested(100_000)), None);
    let objects = |levels: usize| {
        format!(
            r#"{{"x":{}1{},"product_id":"p","message_id":1}}"#,
            r#"{"a":"#.repeat(levels),
            "}".repeat(levels)
        )
    };
    assert!(ids(&objects(MAX_DEPTH - 1)).is_some());
    assert_eq!(ids(&objects(MAX_DEPTH)), None);
    // Deep input that is also unbalanced.
    assert_eq!(ids(&"[".repeat(1_000_000)), None);
}

// ---- reference implementation on serde_json ------------------------------------------------

/// The rules of the module docs, applied to a serde_json parse.
///
/// The top-level map is visited entry by entry, so duplicates are seen (a `Value` map would
/// keep only the last one).
struct Reference(Option<(OwnedId, OwnedId)>);

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn reference_id(value: &Value) -> Option<OwnedId> {
    match value {
        Value::String(s) if !s.is_empty() => String::try_from(s.as_str()).ok().map(OwnedId::Str),
        Value::Number(n) => n.as_i64().map(OwnedId::Int),
        _ => None,
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopLevel;
        impl<'de> Visitor<'de> for TopLevel {
            type Value = Reference;
            fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reference, A::Error> {
                let mut product = Vec::new();
                let mut message = Vec::new();
                let mut ok = true;
                while let Some((key, value)) = map.next_entry::<std::string::String, Value>()? {
                    ok &= depth(&value) < MAX_DEPTH;
                    match key.as_str() {
                        "product_id" => product.push(value),
                        "message_id" => message.push(value),
                        _ => {}
                    }
                }
                let result = match (ok, &product[..], &message[..]) {
                    (true, [p], [m]) => reference_id(p).zip(reference_id(m)),
                    _ => None,
                };
                Ok(Reference(result))
            }
        }
        deserializer.deserialize_map(TopLevel)
    }
}

fn reference(payload: &[u8]) -> Option<(OwnedId, OwnedId)> {
    serde_json::from_slice::<Reference>(payload)
        .ok()
        .and_then(|r| r.0)
}

/// serde_json reads `-0` as the float -0.0, where the rules say integer 0; skip such inputs.
/// It also refuses a number beyond the range of `f64` (`1e400`), where the rules follow the
/// RFC 8259 section 6 grammar only, which has no range: skip those too.
fn has_negative_zero_integer(payload: &[u8]) -> bool {
    let negative_zero = payload.windows(2).enumerate().any(|(i, w)| {
        w == b"-0" && !matches!(payload.get(i + 2), Some(b'.' | b'e' | b'E' | b'0'..=b'9'))
    });
    negative_zero || has_number_out_of_f64_range(payload)
}

/// Whether serde_json refuses `payload` only because a number is out of the range of `f64`.
fn has_number_out_of_f64_range(payload: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(payload) {
        Err(e) => e.to_string().starts_with("number out of range"),
        Ok(_) => false,
    }
}

// ---- generators ------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Big(std::string::String),
    Float(f64),
    Str(std::string::String),
    Arr(Vec<J>),
    Obj(Vec<(std::string::String, J)>),
}

fn json_string() -> impl Strategy<Value = std::string::String> {
    let special = prop::sample::select(vec![
        '"', '\\', '/', '\u{0}', '\u{1f}', '\n', '\u{7f}', '\u{2028}', 'é', '😀', '\u{feff}',
    ]);
    prop_oneof![
        prop::collection::vec(prop_oneof![any::<char>(), special], 0..12)
            .prop_map(|c| c.into_iter().collect()),
        "[a-z]{0,70}",
        Just("product_id".to_owned()),
        Just("message_id".to_owned()),
    ]
}

fn leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::Int),
        (-1000i64..1000).prop_map(J::Int),
        "[1-9][0-9]{18,30}".prop_map(J::Big),
        "-[1-9][0-9]{18,30}".prop_map(J::Big),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(J::Float),
        json_string().prop_map(J::Str),
    ]
}

fn value() -> impl Strategy<Value = J> {
    leaf().prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
            prop::collection::vec((json_string(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

/// A value that makes a valid id (or an over-long string).
fn valid_id() -> impl Strategy<Value = J> {
    prop_oneof![
        any::<i64>().prop_map(J::Int),
        "[a-z0-9]{1,8}".prop_map(J::Str),
        json_string().prop_map(J::Str),
    ]
}

/// A top-level object whose `product_id` / `message_id` keys are not duplicated.
fn envelope_object() -> impl Strategy<Value = J> {
    let member = (
        prop_oneof![
            3 => Just("product_id".to_owned()),
            3 => Just("message_id".to_owned()),
            1 => Just("payload".to_owned()),
            1 => Just("product_i".to_owned()),
            2 => json_string(),
        ],
        prop_oneof![3 => valid_id(), 2 => leaf(), 1 => value()],
    );
    prop::collection::vec(member, 0..7).prop_map(|members| {
        let mut seen = (false, false);
        let members = members
            .into_iter()
            .filter(|(k, _)| match k.as_str() {
                "product_id" => !core::mem::replace(&mut seen.0, true),
                "message_id" => !core::mem::replace(&mut seen.1, true),
                _ => true,
            })
            .collect();
        J::Obj(members)
    })
}

/// A tiny deterministic generator for formatting choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

fn render_ws(out: &mut std::string::String, rng: &mut Rng) {
    while rng.chance(4) {
        out.push([' ', '\t', '\n', '\r'][(rng.next() % 4) as usize]);
    }
}

fn render_str(out: &mut std::string::String, s: &str, rng: &mut Rng) {
    out.push('"');
    for c in s.chars() {
        let must_escape = c < ' ' || c == '"' || c == '\\';
        if must_escape || rng.chance(5) {
            match (c, rng.chance(2)) {
                ('"', true) => out.push_str("\\\""),
                ('\\', true) => out.push_str("\\\\"),
                ('/', true) => out.push_str("\\/"),
                ('\n', true) => out.push_str("\\n"),
                ('\t', true) => out.push_str("\\t"),
                _ => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        if rng.chance(2) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        } else {
                            out.push_str(&format!("\\u{unit:04X}"));
                        }
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out.push('"');
}

fn render(out: &mut std::string::String, value: &J, rng: &mut Rng) {
    render_ws(out, rng);
    match value {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Int(i) => out.push_str(&i.to_string()),
        J::Big(digits) => out.push_str(digits),
        J::Float(f) => {
            // `{:?}` always has a `.` or an exponent; `{:e}` always an exponent.
            if rng.chance(2) {
                out.push_str(&format!("{f:?}"));
            } else {
                out.push_str(&format!("{f:e}"));
            }
        }
        J::Str(s) => render_str(out, s, rng),
        J::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(out, item, rng);
            }
            render_ws(out, rng);
            out.push(']');
        }
        J::Obj(members) => {
            out.push('{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_ws(out, rng);
                render_str(out, key, rng);
                render_ws(out, rng);
                out.push(':');
                render(out, item, rng);
            }
            render_ws(out, rng);
            out.push('}');
        }
    }
    render_ws(out, rng);
}

fn rendered(value: &J, seed: u64) -> Vec<u8> {
    let mut out = std::string::String::new();
    render(&mut out, value, &mut Rng(seed | 1));
    out.into_bytes()
}

/// JSON-ish token soup: mostly invalid, sometimes valid, duplicates included.
fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\"product_id\"",
        "\"message_id\"",
        "\"x\"",
        "\"\"",
        "1",
        "-",
        "0",
        "12",
        ".5",
        "e3",
        "true",
        "null",
        "\"",
        "\\",
        "\\u",
        "d83d",
        "\"\\ud83d\"",
        "\"p\"",
        "\u{feff}",
    ]);
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat().into_bytes())
}

proptest! {
    #![proptest_config(crate::proptest_cases::config(ProptestConfig::with_cases(2048)))]

    #[test]
    fn matches_reference_on_structured_input(object in envelope_object(), seed in any::<u64>()) {
        let payload = rendered(&object, seed);
        prop_assert_eq!(ids_of(&payload), reference(&payload));
    }

    #[test]
    fn matches_reference_on_mutated_input(
        object in envelope_object(),
        seed in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        mode in 0..3u8,
    ) {
        let mut payload = rendered(&object, seed);
        let at = cut.index(payload.len() + 1);
        match mode {
            0 => payload.truncate(at),
            1 => payload.insert(at, byte),
            _ => if at < payload.len() { payload[at] = byte },
        }
        prop_assume!(!has_negative_zero_integer(&payload));
        prop_assert_eq!(ids_of(&payload), reference(&payload));
    }

    #[test]
    fn matches_reference_on_token_soup(payload in token_soup()) {
        prop_assume!(!has_negative_zero_integer(&payload));
        prop_assert_eq!(ids_of(&payload), reference(&payload));
    }

    #[test]
    fn matches_reference_on_random_bytes(payload in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assume!(!has_negative_zero_integer(&payload));
        prop_assert_eq!(ids_of(&payload), reference(&payload));
    }
}

fn ids_of(payload: &[u8]) -> Option<(OwnedId, OwnedId)> {
    parse_envelope(payload).map(|e| (e.product_id, e.message_id))
}
