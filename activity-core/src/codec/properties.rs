//! MQTT 5 properties (OASIS MQTT 5.0, section 2.2.2): the property block of a packet, checked
//! once when it is decoded and then read in place, without copying.
//!
//! A property block is a Variable Byte Integer length followed by properties, each an
//! identifier (a Variable Byte Integer, in practice one byte) and a value of the identifier's
//! type (table 2-4). [`Properties::decode`] checks a block against the packet it belongs to
//! ([`Context`]): every identifier known and allowed there, every value of its type and range,
//! no property twice unless the spec allows it (User Property; Subscription Identifier in a
//! PUBLISH). What breaks the format is a Malformed Packet, what breaks a rule a Protocol Error
//! (section 2.2.2.2 and the "It is a Protocol Error" sentences of section 3);
//! [`DecodeError::is_protocol_error`] tells them apart for the reason code.

use super::wire::{Reader, Writer, add};
use super::{DecodeError, EncodeError};

/// The largest value of a Variable Byte Integer (section 1.5.5).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// Where a property block is (the columns of table 2-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Context {
    /// CONNECT (section 3.1.2.11).
    Connect,
    /// The will properties in a CONNECT's payload (section 3.1.3.2).
    Will,
    /// CONNACK (section 3.2.2.3).
    ConnAck,
    /// PUBLISH (section 3.3.2.3).
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP (sections 3.4.2.2, 3.5.2.2, 3.6.2.2, 3.7.2.2).
    Ack,
    /// SUBSCRIBE (section 3.8.2.1).
    Subscribe,
    /// SUBACK (section 3.9.2.1).
    SubAck,
    /// UNSUBSCRIBE (section 3.10.2.1).
    Unsubscribe,
    /// UNSUBACK (section 3.11.2.1).
    UnsubAck,
    /// DISCONNECT (section 3.14.2.2).
    Disconnect,
    /// AUTH (section 3.15.2.2).
    Auth,
}

impl Context {
    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The type of a property's value (section 2.2.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Byte,
    TwoByte,
    FourByte,
    VarInt,
    String,
    Binary,
    Pair,
}

/// One property identifier's row of table 2-4.
struct Row {
    kind: Kind,
    /// Bits of [`Context::bit`] where it may appear.
    allowed: u16,
}

const fn contexts(list: &[Context]) -> u16 {
    let mut bits = 0;
    let mut i = 0;
    while i < list.len() {
        bits |= list[i].bit();
        i += 1;
    }
    bits
}

use Context as C;

const MESSAGE: u16 = contexts(&[C::Publish, C::Will]);
const ACKS: u16 = contexts(&[
    C::ConnAck,
    C::Ack,
    C::SubAck,
    C::UnsubAck,
    C::Disconnect,
    C::Auth,
]);
const EVERYWHERE: u16 = u16::MAX;

/// Table 2-4: the type and packets of property `id`, or `None` for an unknown identifier.
const fn row(id: u8) -> Option<Row> {
    let (kind, allowed) = match id {
        0x01 => (Kind::Byte, MESSAGE),
        0x02 => (Kind::FourByte, MESSAGE),
        0x03 => (Kind::String, MESSAGE),
        0x08 => (Kind::String, MESSAGE),
        0x09 => (Kind::Binary, MESSAGE),
        0x0B => (Kind::VarInt, contexts(&[C::Publish, C::Subscribe])),
        0x11 => (
            Kind::FourByte,
            contexts(&[C::Connect, C::ConnAck, C::Disconnect]),
        ),
        0x12 => (Kind::String, contexts(&[C::ConnAck])),
        0x13 => (Kind::TwoByte, contexts(&[C::ConnAck])),
        0x15 => (Kind::String, contexts(&[C::Connect, C::ConnAck, C::Auth])),
        0x16 => (Kind::Binary, contexts(&[C::Connect, C::ConnAck, C::Auth])),
        0x17 => (Kind::Byte, contexts(&[C::Connect])),
        0x18 => (Kind::FourByte, contexts(&[C::Will])),
        0x19 => (Kind::Byte, contexts(&[C::Connect])),
        0x1A => (Kind::String, contexts(&[C::ConnAck])),
        0x1C => (Kind::String, contexts(&[C::ConnAck, C::Disconnect])),
        0x1F => (Kind::String, ACKS),
        0x21 => (Kind::TwoByte, contexts(&[C::Connect, C::ConnAck])),
        0x22 => (Kind::TwoByte, contexts(&[C::Connect, C::ConnAck])),
        0x23 => (Kind::TwoByte, contexts(&[C::Publish])),
        0x24 => (Kind::Byte, contexts(&[C::ConnAck])),
        0x25 => (Kind::Byte, contexts(&[C::ConnAck])),
        0x26 => (Kind::Pair, EVERYWHERE),
        0x27 => (Kind::FourByte, contexts(&[C::Connect, C::ConnAck])),
        0x28..=0x2A => (Kind::Byte, contexts(&[C::ConnAck])),
        _ => return None,
    };
    Some(Row { kind, allowed })
}

/// One MQTT 5 property, borrowing its strings and binary data (table 2-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Property<'a> {
    /// 0x01: whether the payload is UTF-8 (1) or unspecified bytes (0).
    PayloadFormatIndicator(u8),
    /// 0x02: the message's lifetime in seconds.
    MessageExpiryInterval(u32),
    /// 0x03: the payload's content type.
    ContentType(&'a str),
    /// 0x08: the topic for a response (request/response, section 4.10).
    ResponseTopic(&'a str),
    /// 0x09: data that ties a response to its request.
    CorrelationData(&'a [u8]),
    /// 0x0B: a subscription identifier, 1 to 268,435,455.
    SubscriptionIdentifier(u32),
    /// 0x11: how long the session outlives the connection, in seconds.
    SessionExpiryInterval(u32),
    /// 0x12: the client id the server assigned.
    AssignedClientIdentifier(&'a str),
    /// 0x13: the keep-alive the server imposes, in seconds.
    ServerKeepAlive(u16),
    /// 0x15: the enhanced authentication method.
    AuthenticationMethod(&'a str),
    /// 0x16: enhanced authentication data.
    AuthenticationData(&'a [u8]),
    /// 0x17: whether the server may send reason strings and user properties on failures.
    RequestProblemInformation(u8),
    /// 0x18: how long the server waits before publishing the will, in seconds.
    WillDelayInterval(u32),
    /// 0x19: whether the client asks for response information in the CONNACK.
    RequestResponseInformation(u8),
    /// 0x1A: the basis of response topics.
    ResponseInformation(&'a str),
    /// 0x1C: another server to use.
    ServerReference(&'a str),
    /// 0x1F: a human-readable reason.
    ReasonString(&'a str),
    /// 0x21: how many QoS 1 and 2 publishes the sender accepts in flight, 1 to 65535.
    ReceiveMaximum(u16),
    /// 0x22: the highest topic alias the sender accepts.
    TopicAliasMaximum(u16),
    /// 0x23: a topic alias, 1 or more.
    TopicAlias(u16),
    /// 0x24: the highest QoS the server supports, 0 or 1 (absent: 2).
    MaximumQoS(u8),
    /// 0x25: whether the server supports retained messages.
    RetainAvailable(u8),
    /// 0x26: a name and value, free to the application.
    UserProperty(&'a str, &'a str),
    /// 0x27: the largest packet the sender accepts, 1 or more.
    MaximumPacketSize(u32),
    /// 0x28: whether the server supports wildcard subscriptions.
    WildcardSubscriptionAvailable(u8),
    /// 0x29: whether the server supports subscription identifiers.
    SubscriptionIdentifierAvailable(u8),
    /// 0x2A: whether the server supports shared subscriptions.
    SharedSubscriptionAvailable(u8),
}

impl<'a> Property<'a> {
    /// The property identifier.
    pub const fn id(&self) -> u8 {
        match self {
            Property::PayloadFormatIndicator(_) => 0x01,
            Property::MessageExpiryInterval(_) => 0x02,
            Property::ContentType(_) => 0x03,
            Property::ResponseTopic(_) => 0x08,
            Property::CorrelationData(_) => 0x09,
            Property::SubscriptionIdentifier(_) => 0x0B,
            Property::SessionExpiryInterval(_) => 0x11,
            Property::AssignedClientIdentifier(_) => 0x12,
            Property::ServerKeepAlive(_) => 0x13,
            Property::AuthenticationMethod(_) => 0x15,
            Property::AuthenticationData(_) => 0x16,
            Property::RequestProblemInformation(_) => 0x17,
            Property::WillDelayInterval(_) => 0x18,
            Property::RequestResponseInformation(_) => 0x19,
            Property::ResponseInformation(_) => 0x1A,
            Property::ServerReference(_) => 0x1C,
            Property::ReasonString(_) => 0x1F,
            Property::ReceiveMaximum(_) => 0x21,
            Property::TopicAliasMaximum(_) => 0x22,
            Property::TopicAlias(_) => 0x23,
            Property::MaximumQoS(_) => 0x24,
            Property::RetainAvailable(_) => 0x25,
            Property::UserProperty(..) => 0x26,
            Property::MaximumPacketSize(_) => 0x27,
            Property::WildcardSubscriptionAvailable(_) => 0x28,
            Property::SubscriptionIdentifierAvailable(_) => 0x29,
            Property::SharedSubscriptionAvailable(_) => 0x2A,
        }
    }

    /// Reads the value of property `id` (known, see [`row`]) and checks its range.
    fn read(id: u8, kind: Kind, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let bad = DecodeError::InvalidPropertyValue(id);
        let property = match kind {
            Kind::Byte => {
                let value = r.u8()?;
                // Every byte property is a 0/1 flag, except Maximum QoS, which is 0 or 1 too
                // (absent means 2, section 3.2.2.3.4).
                if value > 1 {
                    return Err(bad);
                }
                match id {
                    0x01 => Property::PayloadFormatIndicator(value),
                    0x17 => Property::RequestProblemInformation(value),
                    0x19 => Property::RequestResponseInformation(value),
                    0x24 => Property::MaximumQoS(value),
                    0x25 => Property::RetainAvailable(value),
                    0x28 => Property::WildcardSubscriptionAvailable(value),
                    0x29 => Property::SubscriptionIdentifierAvailable(value),
                    _ => Property::SharedSubscriptionAvailable(value),
                }
            }
            Kind::TwoByte => {
                let value = r.u16()?;
                match id {
                    0x13 => Property::ServerKeepAlive(value),
                    0x22 => Property::TopicAliasMaximum(value),
                    // Receive Maximum 0 (3.1.2.11.3, 3.2.2.3.3) and Topic Alias 0 (3.3.2.3.4)
                    // are Protocol Errors.
                    _ if value == 0 => return Err(bad),
                    0x21 => Property::ReceiveMaximum(value),
                    _ => Property::TopicAlias(value),
                }
            }
            Kind::FourByte => {
                let value = r.u32()?;
                match id {
                    0x02 => Property::MessageExpiryInterval(value),
                    0x11 => Property::SessionExpiryInterval(value),
                    0x18 => Property::WillDelayInterval(value),
                    // Maximum Packet Size 0 is a Protocol Error (3.1.2.11.4, 3.2.2.3.6).
                    _ if value == 0 => return Err(bad),
                    _ => Property::MaximumPacketSize(value),
                }
            }
            Kind::VarInt => match r.var_int()? {
                // Subscription Identifier 0 is a Protocol Error (3.3.2.3.8, 3.8.2.1.2).
                0 => return Err(bad),
                value => Property::SubscriptionIdentifier(value),
            },
            Kind::String => {
                let value = r.string()?;
                match id {
                    0x03 => Property::ContentType(value),
                    0x08 => Property::ResponseTopic(value),
                    0x12 => Property::AssignedClientIdentifier(value),
                    0x15 => Property::AuthenticationMethod(value),
                    0x1A => Property::ResponseInformation(value),
                    0x1C => Property::ServerReference(value),
                    _ => Property::ReasonString(value),
                }
            }
            Kind::Binary => {
                let value = r.binary()?;
                match id {
                    0x09 => Property::CorrelationData(value),
                    _ => Property::AuthenticationData(value),
                }
            }
            Kind::Pair => Property::UserProperty(r.string()?, r.string()?),
        };
        Ok(property)
    }

    /// The bytes the property takes on the wire: identifier and value.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        let value = match self {
            Property::PayloadFormatIndicator(_)
            | Property::RequestProblemInformation(_)
            | Property::RequestResponseInformation(_)
            | Property::MaximumQoS(_)
            | Property::RetainAvailable(_)
            | Property::WildcardSubscriptionAvailable(_)
            | Property::SubscriptionIdentifierAvailable(_)
            | Property::SharedSubscriptionAvailable(_) => 1,
            Property::ServerKeepAlive(_)
            | Property::ReceiveMaximum(_)
            | Property::TopicAliasMaximum(_)
            | Property::TopicAlias(_) => 2,
            Property::MessageExpiryInterval(_)
            | Property::SessionExpiryInterval(_)
            | Property::WillDelayInterval(_)
            | Property::MaximumPacketSize(_) => 4,
            Property::SubscriptionIdentifier(value) => var_int_len(*value)?,
            Property::ContentType(s)
            | Property::ResponseTopic(s)
            | Property::AssignedClientIdentifier(s)
            | Property::AuthenticationMethod(s)
            | Property::ResponseInformation(s)
            | Property::ServerReference(s)
            | Property::ReasonString(s) => super::wire::string_len(s)?,
            Property::CorrelationData(data) | Property::AuthenticationData(data) => {
                super::wire::binary_len(data)?
            }
            Property::UserProperty(name, value) => add(
                super::wire::string_len(name)?,
                super::wire::string_len(value)?,
            )?,
        };
        add(1, value)
    }

    /// Writes the identifier and value.
    fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u8(self.id())?;
        match *self {
            Property::PayloadFormatIndicator(v)
            | Property::RequestProblemInformation(v)
            | Property::RequestResponseInformation(v)
            | Property::MaximumQoS(v)
            | Property::RetainAvailable(v)
            | Property::WildcardSubscriptionAvailable(v)
            | Property::SubscriptionIdentifierAvailable(v)
            | Property::SharedSubscriptionAvailable(v) => w.u8(v),
            Property::ServerKeepAlive(v)
            | Property::ReceiveMaximum(v)
            | Property::TopicAliasMaximum(v)
            | Property::TopicAlias(v) => w.u16(v),
            Property::MessageExpiryInterval(v)
            | Property::SessionExpiryInterval(v)
            | Property::WillDelayInterval(v)
            | Property::MaximumPacketSize(v) => w.bytes(&v.to_be_bytes()),
            Property::SubscriptionIdentifier(v) => w.var_int(v),
            Property::ContentType(s)
            | Property::ResponseTopic(s)
            | Property::AssignedClientIdentifier(s)
            | Property::AuthenticationMethod(s)
            | Property::ResponseInformation(s)
            | Property::ServerReference(s)
            | Property::ReasonString(s) => w.string(s),
            Property::CorrelationData(data) | Property::AuthenticationData(data) => w.binary(data),
            Property::UserProperty(name, value) => {
                w.string(name)?;
                w.string(value)
            }
        }
    }
}

/// A checked property block, read in place (the bytes after its length).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Properties<'a> {
    raw: &'a [u8],
}

impl<'a> Properties<'a> {
    /// No properties.
    pub const EMPTY: Properties<'static> = Properties { raw: &[] };

    /// Checks `raw` (the properties, without the length in front) as the block of a packet of
    /// `context`.
    pub fn parse(raw: &'a [u8], context: Context) -> Result<Self, DecodeError> {
        let mut seen: u64 = 0;
        let mut r = Reader::new(raw);
        while !r.is_empty() {
            let id = property_id(&mut r)?;
            let row = row(id).ok_or(DecodeError::UnknownProperty(id))?;
            if row.allowed & context.bit() == 0 {
                return Err(DecodeError::PropertyNotAllowed(id));
            }
            let repeatable = id == 0x26 || (id == 0x0B && context == Context::Publish);
            let bit = 1u64 << id;
            if seen & bit != 0 && !repeatable {
                return Err(DecodeError::DuplicateProperty(id));
            }
            seen |= bit;
            Property::read(id, row.kind, &mut r)?;
        }
        Ok(Properties { raw })
    }

    /// Reads a block (its length, then the properties) from the front of `r`.
    pub(super) fn decode(r: &mut Reader<'a>, context: Context) -> Result<Self, DecodeError> {
        let len = r.var_int()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        Properties::parse(r.take(len)?, context)
    }

    /// A block of one Message Expiry Interval (0x02, a Four Byte Integer: section 3.3.2.3.3)
    /// of `seconds`, written into `raw`: valid by construction, so nothing is parsed (a server
    /// that keeps the interval without the block, as the gateway's retained table does).
    pub const fn message_expiry(raw: &'a mut [u8; 5], seconds: u32) -> Self {
        let [a, b, c, d] = seconds.to_be_bytes();
        *raw = [0x02, a, b, c, d];
        Properties { raw }
    }

    /// The properties' bytes, without the length in front.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the block holds no property.
    pub const fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The properties in wire order.
    pub fn iter(&self) -> PropertiesIter<'a> {
        PropertiesIter {
            reader: Reader::new(self.raw),
        }
    }

    /// The first property with identifier `id`.
    fn find(&self, id: u8) -> Option<Property<'a>> {
        self.iter().find(|p| p.id() == id)
    }

    /// The Session Expiry Interval (0x11), in seconds.
    pub fn session_expiry_interval(&self) -> Option<u32> {
        match self.find(0x11)? {
            Property::SessionExpiryInterval(v) => Some(v),
            _ => None,
        }
    }

    /// The Server Keep Alive (0x13), in seconds.
    pub fn server_keep_alive(&self) -> Option<u16> {
        match self.find(0x13)? {
            Property::ServerKeepAlive(v) => Some(v),
            _ => None,
        }
    }

    /// The Receive Maximum (0x21).
    pub fn receive_maximum(&self) -> Option<u16> {
        match self.find(0x21)? {
            Property::ReceiveMaximum(v) => Some(v),
            _ => None,
        }
    }

    /// The Maximum Packet Size (0x27).
    pub fn maximum_packet_size(&self) -> Option<u32> {
        match self.find(0x27)? {
            Property::MaximumPacketSize(v) => Some(v),
            _ => None,
        }
    }

    /// The Topic Alias Maximum (0x22).
    pub fn topic_alias_maximum(&self) -> Option<u16> {
        match self.find(0x22)? {
            Property::TopicAliasMaximum(v) => Some(v),
            _ => None,
        }
    }

    /// The Topic Alias (0x23).
    pub fn topic_alias(&self) -> Option<u16> {
        match self.find(0x23)? {
            Property::TopicAlias(v) => Some(v),
            _ => None,
        }
    }

    /// The Message Expiry Interval (0x02), in seconds.
    pub fn message_expiry_interval(&self) -> Option<u32> {
        match self.find(0x02)? {
            Property::MessageExpiryInterval(v) => Some(v),
            _ => None,
        }
    }

    /// The Will Delay Interval (0x18), in seconds.
    pub fn will_delay_interval(&self) -> Option<u32> {
        match self.find(0x18)? {
            Property::WillDelayInterval(v) => Some(v),
            _ => None,
        }
    }

    /// The Authentication Method (0x15).
    pub fn authentication_method(&self) -> Option<&'a str> {
        match self.find(0x15)? {
            Property::AuthenticationMethod(v) => Some(v),
            _ => None,
        }
    }

    /// The Subscription Identifier (0x0B) of a SUBSCRIBE; the first one of a PUBLISH.
    pub fn subscription_identifier(&self) -> Option<u32> {
        match self.find(0x0B)? {
            Property::SubscriptionIdentifier(v) => Some(v),
            _ => None,
        }
    }

    /// The value of the first User Property (0x26) named `name`.
    pub fn user_property(&self, name: &str) -> Option<&'a str> {
        self.user_properties()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// Every User Property (0x26), name and value, in wire order.
    pub fn user_properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.iter().filter_map(|p| match p {
            Property::UserProperty(name, value) => Some((name, value)),
            _ => None,
        })
    }

    /// The bytes of the block on the wire: its length, then the properties.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        block_len(self.raw.len())
    }

    /// Writes the block: its length, then the properties.
    pub(super) fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.var_int(u32::try_from(self.raw.len()).map_err(|_| EncodeError::PacketTooLarge)?)?;
        w.bytes(self.raw)
    }
}

/// The properties of a checked block, in wire order.
#[derive(Clone, Debug)]
pub struct PropertiesIter<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for PropertiesIter<'a> {
    type Item = Property<'a>;

    fn next(&mut self) -> Option<Property<'a>> {
        if self.reader.is_empty() {
            return None;
        }
        // The block was checked by `Properties::parse`: every read succeeds. Were it not, the
        // iteration ends instead of panicking.
        let id = property_id(&mut self.reader).ok()?;
        let row = row(id)?;
        match Property::read(id, row.kind, &mut self.reader) {
            Ok(property) => Some(property),
            Err(_) => {
                self.reader = Reader::new(&[]);
                None
            }
        }
    }
}

/// A property identifier: a Variable Byte Integer (section 2.2.2.2), one byte for every
/// identifier defined; a longer one is unknown.
fn property_id(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    let id = r.var_int()?;
    u8::try_from(id).map_err(|_| DecodeError::UnknownProperty(0xFF))
}

/// Writes `properties` (without a length in front) into `out`; the bytes written. With
/// [`Properties::parse`], this builds a block for a packet the caller sends.
pub fn encode_properties(
    properties: &[Property<'_>],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let needed = properties_len(properties)?;
    let out = out
        .get_mut(..needed)
        .ok_or(EncodeError::BufferTooSmall { needed })?;
    let mut w = Writer::new(out);
    for property in properties {
        property.write(&mut w)?;
    }
    Ok(w.position())
}

/// The bytes of `properties` on the wire, without a length in front.
pub fn properties_len(properties: &[Property<'_>]) -> Result<usize, EncodeError> {
    properties
        .iter()
        .try_fold(0usize, |sum, p| add(sum, p.encoded_len()?))
}

/// The bytes of a block of `len` bytes of properties with its length in front.
pub(super) fn block_len(len: usize) -> Result<usize, EncodeError> {
    let prefix = var_int_len(u32::try_from(len).map_err(|_| EncodeError::PacketTooLarge)?)?;
    add(prefix, len)
}

/// The bytes of a Variable Byte Integer (section 1.5.5).
pub(super) fn var_int_len(value: u32) -> Result<usize, EncodeError> {
    Ok(match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        2_097_152..=MAX_VAR_INT => 4,
        _ => return Err(EncodeError::PacketTooLarge),
    })
}

#[cfg(test)]
mod tests;
