//! Envelope parsing for `SYSTEM/msgack`: the product and message ids a message carries.
//!
//! An application that wants proof of delivery publishes an ordinary message whose payload is a
//! JSON object (RFC 8259) carrying both ids, such as
//! `{"product_id":"p1","message_id":"m42","payload":"data"}`; the pair identifies the message
//! uniquely across products. When a subscriber acknowledges the delivery of such a message, the
//! server emits `msgack` with both ids. [`parse_envelope`] reads the ids with a small
//! hand-written scanner that allocates nothing and does work linear in the input. It never
//! panics and has no error type: any payload that breaks a rule gives `None`.
//!
//! # Rules
//!
//! - The payload must be valid UTF-8 (RFC 8259 section 8.1) and contain exactly one JSON value,
//!   an object, with only JSON whitespace (space, tab, line feed, carriage return) around it.
//!   A leading byte order mark is not whitespace, so it gives `None`.
//! - The whole document must be valid JSON, including the members that are skipped: strings
//!   without raw control characters and with valid escapes, numbers per the section 6 grammar,
//!   the literals `true`, `false`, `null`, no trailing commas.
//! - Objects and arrays may nest at most [`MAX_DEPTH`] levels, counting the top-level object as
//!   level 1; anything deeper gives `None`.
//! - Keys are compared after unescaping, so `"product\u005fid"` is `product_id`.
//! - `product_id` and `message_id` must both appear at the top level, each exactly once; a
//!   duplicate of either gives `None` (duplicates of other keys are allowed).
//! - Each id is either a non-empty string of at most [`ID_CAPACITY`] bytes after unescaping
//!   (all escapes of section 7, including `\uXXXX` surrogate pairs), or an integer
//!   `-?(0|[1-9][0-9]*)` without fraction or exponent that fits in `i64` (`-0` is 0). A float,
//!   a larger number, `true`, `false`, `null`, an object or an array gives `None`.
//! - A `\u` escape of a lone surrogate, anywhere in the document, gives `None`.
//!
//! # MQTT 5 user properties
//!
//! An MQTT 5 message can carry the ids without touching its payload: user properties
//! (5.0 section 3.3.2.3.7) named `product_id` and `message_id`. [`envelope_of_properties`]
//! reads them: each exactly once, a non-empty string of at most [`ID_CAPACITY`] bytes (always a
//! string id: user property values are strings, `"42"` stays `"42"`); otherwise `None`.
//! [`find_envelope`] is the one rule the server applies to a message: the user properties when
//! they give both ids, else the payload.

use heapless::String;

use crate::codec::Properties;
use crate::event::Id;
use crate::json_scan::find_special;

/// The most bytes an unescaped string id may have.
pub const ID_CAPACITY: usize = 64;

/// The deepest nesting of objects and arrays accepted, counting the top-level object as 1.
pub const MAX_DEPTH: usize = 32;

/// An id owned by the parser: the unescaped string or the integer from the payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OwnedId {
    /// The id was a JSON string; this is its unescaped text, never empty.
    Str(String<ID_CAPACITY>),
    /// The id was a JSON integer.
    Int(i64),
}

impl OwnedId {
    /// Borrows the id for an event.
    pub fn as_id(&self) -> Id<'_> {
        match self {
            OwnedId::Str(s) => Id::Str(s.as_str()),
            OwnedId::Int(i) => Id::Int(*i),
        }
    }
}

/// The ids read from a `SYSTEM/msgack` payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Envelope {
    /// The top-level `product_id` member.
    pub product_id: OwnedId,
    /// The top-level `message_id` member.
    pub message_id: OwnedId,
}

/// The ids of a message: from its MQTT 5 user properties when they give both
/// ([`envelope_of_properties`]), else from its payload ([`parse_envelope`]).
pub fn find_envelope(payload: &[u8], properties: &Properties<'_>) -> Option<Envelope> {
    envelope_of_properties(properties).or_else(|| parse_envelope(payload))
}

/// `Some` when the user properties hold `product_id` and `message_id` once each, as non-empty
/// strings of at most [`ID_CAPACITY`] bytes (see the [module docs](self)).
pub fn envelope_of_properties(properties: &Properties<'_>) -> Option<Envelope> {
    if properties.is_empty() {
        return None;
    }
    let mut product_id = None;
    let mut message_id = None;
    for (name, value) in properties.user_properties() {
        let slot = match name {
            "product_id" => &mut product_id,
            "message_id" => &mut message_id,
            _ => continue,
        };
        if slot.is_some() || value.is_empty() {
            return None;
        }
        *slot = Some(OwnedId::Str(String::try_from(value).ok()?));
    }
    Some(Envelope {
        product_id: product_id?,
        message_id: message_id?,
    })
}

/// `Some` when the payload is a JSON object whose top level has both `product_id` and `message_id` as strings or integers.
///
/// See the [module docs](self) for the exact rules.
pub fn parse_envelope(payload: &[u8]) -> Option<Envelope> {
    let text = core::str::from_utf8(payload).ok()?;
    let mut scanner = Scanner { text, pos: 0 };
    let mut product_id = None;
    let mut message_id = None;

    scanner.skip_ws();
    scanner.expect(b'{')?;
    scanner.skip_ws();
    if scanner.peek()? == b'}' {
        // An empty object has no ids.
        return None;
    }
    loop {
        scanner.skip_ws();
        let key = scanner.key()?;
        scanner.skip_ws();
        scanner.expect(b':')?;
        scanner.skip_ws();
        match key {
            Key::ProductId if product_id.is_none() => product_id = Some(scanner.id()?),
            Key::MessageId if message_id.is_none() => message_id = Some(scanner.id()?),
            Key::ProductId | Key::MessageId => return None,
            Key::Other => scanner.skip_value()?,
        }
        scanner.skip_ws();
        match scanner.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    scanner.skip_ws();
    if !scanner.is_at_end() {
        return None;
    }
    Some(Envelope {
        product_id: product_id?,
        message_id: message_id?,
    })
}

/// A top-level key, classified.
enum Key {
    ProductId,
    MessageId,
    Other,
}

/// Compares an unescaped string, one piece at a time, with a fixed ASCII name.
struct NameMatcher {
    name: &'static [u8],
    len: usize,
    is_match: bool,
}

impl NameMatcher {
    const fn new(name: &'static str) -> Self {
        NameMatcher {
            name: name.as_bytes(),
            len: 0,
            is_match: true,
        }
    }

    /// Feeds the next piece of the unescaped string (a run of text or one escaped character).
    fn push(&mut self, piece: &str) {
        let expected = self.name.get(self.len..).unwrap_or_default();
        self.is_match &= expected.starts_with(piece.as_bytes());
        self.len = self.len.saturating_add(piece.len());
    }

    fn is_complete_match(&self) -> bool {
        self.is_match && self.len == self.name.len()
    }
}

/// A cursor over the validated UTF-8 payload.
///
/// `pos` only ever advances past ASCII bytes or whole characters, so it stays on a character
/// boundary; the code still uses `get` so a broken invariant gives `None`, not a panic.
struct Scanner<'t> {
    text: &'t str,
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn is_at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    /// Skips JSON whitespace (RFC 8259 section 2).
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Reads a literal such as `true`.
    fn literal(&mut self, word: &str) -> Option<()> {
        let rest = self.text.as_bytes().get(self.pos..)?;
        if rest.starts_with(word.as_bytes()) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    /// Reads a string (RFC 8259 section 7), feeding its unescaped text to `sink` in pieces: each
    /// run of characters without escapes in one call, each escaped character in its own call.
    ///
    /// A `None` from `sink` stops the scan and is returned.
    fn string(&mut self, sink: &mut dyn FnMut(&str) -> Option<()>) -> Option<()> {
        self.expect(b'"')?;
        loop {
            // The run up to the next quote, backslash or control character. Those are ASCII, so
            // they never occur inside a multi-byte UTF-8 character and the run is whole characters.
            let start = self.pos;
            let rest = self.text.as_bytes().get(start..)?;
            let end = start + find_special(rest).unwrap_or(rest.len());
            if end > start {
                sink(self.text.get(start..end)?)?;
                self.pos = end;
            }
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => {
                    let c = self.escape()?;
                    sink(c.encode_utf8(&mut [0u8; 4]))?;
                }
                // Control characters must be escaped inside strings.
                _ => return None,
            }
        }
    }

    fn escape(&mut self) -> Option<char> {
        let c = match self.next()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by an escaped low surrogate.
                        self.expect(b'\\')?;
                        self.expect(b'u')?;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        let scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(scalar)?
                    }
                    // `from_u32` refuses a lone low surrogate.
                    _ => char::from_u32(unit)?,
                }
            }
            _ => return None,
        };
        Some(c)
    }

    /// Reads four hex digits.
    fn hex4(&mut self) -> Option<u32> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = char::from(self.next()?).to_digit(16)?;
            value = (value << 4) | digit;
        }
        Some(value)
    }

    /// Reads a number (RFC 8259 section 6); returns its value when it is an integer that fits
    /// in `i64`, `Some(None)` for any other valid number, `None` for invalid syntax.
    fn number(&mut self) -> Option<Option<i64>> {
        let negative = self.peek()? == b'-';
        if negative {
            self.pos += 1;
        }
        // The magnitude in a `u64`, which holds any 19 digits without overflow (no leading
        // zeros: a number starting with 0 is that one digit); more digits are past `i64` anyway.
        let mut magnitude: u64 = 0;
        let mut count = 1u32;
        match self.next()? {
            b'0' => {}
            digit @ b'1'..=b'9' => {
                magnitude = u64::from(digit - b'0');
                while let Some(digit @ b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                    magnitude = magnitude
                        .wrapping_mul(10)
                        .wrapping_add(u64::from(digit - b'0'));
                    count = count.saturating_add(1);
                }
            }
            _ => return None,
        }
        // `i64::MIN`'s magnitude is one more than `i64::MAX`.
        let limit = i64::MAX.unsigned_abs() + u64::from(negative);
        let value = (count <= 19 && magnitude <= limit).then_some(magnitude);
        let mut is_integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            is_integer = false;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            is_integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
        }
        if !is_integer {
            return Some(None);
        }
        // In range (checked above): `magnitude` fits as it is, or negated.
        Some(value.map(|magnitude| {
            if negative {
                0i64.wrapping_sub_unsigned(magnitude)
            } else {
                0i64.wrapping_add_unsigned(magnitude)
            }
        }))
    }

    /// Reads one or more decimal digits.
    fn digits(&mut self) -> Option<()> {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        (self.pos > start).then_some(())
    }

    /// Reads an object key and classifies it.
    fn key(&mut self) -> Option<Key> {
        let mut product = NameMatcher::new("product_id");
        let mut message = NameMatcher::new("message_id");
        self.string(&mut |piece| {
            product.push(piece);
            message.push(piece);
            Some(())
        })?;
        Some(if product.is_complete_match() {
            Key::ProductId
        } else if message.is_complete_match() {
            Key::MessageId
        } else {
            Key::Other
        })
    }

    /// Reads an id value: a non-empty string of at most [`ID_CAPACITY`] bytes, or an `i64`.
    fn id(&mut self) -> Option<OwnedId> {
        match self.peek()? {
            b'"' => {
                let mut id = String::new();
                self.string(&mut |piece| id.push_str(piece).ok())?;
                (!id.is_empty()).then_some(OwnedId::Str(id))
            }
            b'-' | b'0'..=b'9' => self.number()?.map(OwnedId::Int),
            _ => None,
        }
    }

    /// Skips one member value of the top-level object, of any type.
    ///
    /// Iterative, with the open containers kept as a bit stack (1 = object, 0 = array), so
    /// deep input cannot exhaust the call stack.
    fn skip_value(&mut self) -> Option<()> {
        const _: () = assert!(MAX_DEPTH <= 64, "the container stack is a u64");
        // The top-level object is level 1; containers opened here start at level 2.
        let mut depth = 1;
        let mut stack: u64 = 0;
        loop {
            // Expect a value.
            self.skip_ws();
            let mut opened = None;
            match self.peek()? {
                b'{' => opened = Some(true),
                b'[' => opened = Some(false),
                b'"' => self.string(&mut |_| Some(()))?,
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                b't' => self.literal("true")?,
                b'f' => self.literal("false")?,
                b'n' => self.literal("null")?,
                _ => return None,
            }
            if let Some(is_object) = opened {
                self.pos += 1;
                depth += 1;
                if depth > MAX_DEPTH {
                    return None;
                }
                self.skip_ws();
                let close = if is_object { b'}' } else { b']' };
                if self.peek()? == close {
                    // Empty container: it is a complete value.
                    self.pos += 1;
                    depth -= 1;
                } else {
                    stack = (stack << 1) | u64::from(is_object);
                    if is_object {
                        self.member_name()?;
                    }
                    continue;
                }
            }
            // After a complete value: close containers until a `,` asks for the next value.
            loop {
                if depth == 1 {
                    return Some(());
                }
                let in_object = stack & 1 == 1;
                self.skip_ws();
                match self.next()? {
                    b',' => {
                        if in_object {
                            self.skip_ws();
                            self.member_name()?;
                        }
                        break;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    _ => return None,
                }
                stack >>= 1;
                depth -= 1;
            }
        }
    }

    /// Skips a nested object's `"name" :`.
    fn member_name(&mut self) -> Option<()> {
        self.string(&mut |_| Some(()))?;
        self.skip_ws();
        self.expect(b':')
    }
}

#[cfg(test)]
mod tests;
