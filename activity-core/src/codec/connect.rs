//! CONNECT, the first packet a client sends (MQTT 3.1.1 section 3.1, MQTT 5.0 section 3.1).
//!
//! Fixed header `0x10`. Variable header (3.1.2): protocol name (3.1.2.1), protocol level
//! (3.1.2.2), connect flags (3.1.2.3-3.1.2.9), keep alive (3.1.2.10), and in MQTT 5 the
//! properties (5.0 3.1.2.11). Payload (3.1.3), in this order and present as the flags say:
//! client identifier, will properties (MQTT 5), will topic, will message, user name, password.
//!
//! The name and level say the version: `MQIsdp` and 3 for MQTT 3.1, `MQTT` and 4 for MQTT
//! 3.1.1, `MQTT` and 5 for MQTT 5.0. MQTT 3.1 lays out the rest as 3.1.1 does.

use super::properties::{Context, Properties};
use super::wire::{add, binary_len, string_len};
use super::{DecodeError, EncodeError, Reader, Version, Writer};
use crate::QoS;
use crate::topic::validate_topic_name;

/// The protocol name of a CONNECT (section 3.1.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProtocolName {
    /// `MQTT`: MQTT 3.1.1 (level 4) and 5.0 (level 5).
    Mqtt,
    /// `MQIsdp`: MQTT 3.1 (level 3; MQTT V3.1 Protocol Specification, "Variable header").
    MqIsdp,
}

impl ProtocolName {
    /// The name's bytes.
    pub const fn as_bytes(self) -> &'static [u8] {
        match self {
            ProtocolName::Mqtt => b"MQTT",
            ProtocolName::MqIsdp => b"MQIsdp",
        }
    }
}

/// The protocol level of MQTT 3.1.1 (section 3.1.2.2).
pub const PROTOCOL_LEVEL: u8 = 4;

const USERNAME: u8 = 0x80;
const PASSWORD: u8 = 0x40;
const WILL_RETAIN: u8 = 0x20;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_QOS_MASK: u8 = 0x18;
const WILL: u8 = 0x04;
const CLEAN_SESSION: u8 = 0x02;
const RESERVED: u8 = 0x01;

/// The Will Message a server publishes when the client disconnects abnormally (3.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LastWill<'a> {
    /// The topic name to publish on; a valid topic name (3.1.3.2).
    pub topic: &'a str,
    /// The application message (3.1.3.3).
    pub message: &'a [u8],
    /// The QoS to publish with (3.1.2.6).
    pub qos: QoS,
    /// Whether the message is retained (3.1.2.7).
    pub retain: bool,
    /// The MQTT 5 will properties (5.0 section 3.1.3.2); empty before MQTT 5.
    pub properties: Properties<'a>,
}

/// A CONNECT packet (section 3.1).
///
/// A CONNECT whose protocol name is `MQTT` or `MQIsdp` but whose level is not one of its
/// versions still decodes, with `protocol_level` set to that level, so that a server can
/// answer CONNACK 0x01 (unacceptable protocol version) as section 3.1.2.2 requires. Its
/// payload belongs to another protocol version and is skipped: such a `Connect` carries the
/// clean-session bit and keep alive of the variable header, an empty `client_id` and no user
/// name, password, will or properties. Encoding writes the layout of `protocol_level` (that of
/// 3.1.1 for a level this codec does not speak).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Connect<'a> {
    /// The protocol name (section 3.1.2.1).
    pub protocol_name: ProtocolName,
    /// The protocol level: 3 for MQTT 3.1, 4 for MQTT 3.1.1, 5 for MQTT 5.0 (section 3.1.2.2).
    pub protocol_level: u8,
    /// The client identifier (3.1.3.1). May be empty: whether to accept that (only with a
    /// clean session) is the server's decision, answered with CONNACK 0x02.
    pub client_id: &'a str,
    /// MQTT 3.1 and 3.1.1: whether the session starts afresh and ends with the connection
    /// (3.1.2.4). MQTT 5: Clean Start, whether it starts afresh (its end is the Session Expiry
    /// Interval's, 5.0 section 3.1.2.4).
    pub clean_session: bool,
    /// The keep-alive interval in seconds, 0 for none (3.1.2.10).
    pub keep_alive: u16,
    /// The user name (3.1.3.4).
    pub username: Option<&'a str>,
    /// The password (3.1.3.5); before MQTT 5 only allowed together with a user name (3.1.2.9).
    pub password: Option<&'a [u8]>,
    /// The will message (3.1.2.5).
    pub will: Option<LastWill<'a>>,
    /// The MQTT 5 properties (5.0 section 3.1.2.11); empty before MQTT 5.
    pub properties: Properties<'a>,
}

impl<'a> Connect<'a> {
    /// Decodes the variable header and payload.
    pub(super) fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let protocol_name = match r.binary()? {
            b"MQTT" => ProtocolName::Mqtt,
            b"MQIsdp" => ProtocolName::MqIsdp,
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        let protocol_level = r.u8()?;
        let flags = r.u8()?;
        let keep_alive = r.u16()?;
        let clean_session = flags & CLEAN_SESSION != 0;
        let Some(version) = version_of(protocol_name, protocol_level) else {
            // Another protocol version: the server only needs the level to refuse it.
            return Ok(Connect {
                protocol_name,
                protocol_level,
                client_id: "",
                clean_session,
                keep_alive,
                username: None,
                password: None,
                will: None,
                properties: Properties::EMPTY,
            });
        };

        // Section 3.1.2.3: reserved bit 0. 3.1.2.6, 3.1.2.7: no will QoS or retain without a
        // will. 3.1.2.9: no password without a user name (MQTT 5 allows one, 5.0 3.1.2.9).
        let has_will = flags & WILL != 0;
        let will_bits_without_will = !has_will && flags & (WILL_RETAIN | WILL_QOS_MASK) != 0;
        let password_without_username =
            !version.is_v5() && flags & PASSWORD != 0 && flags & USERNAME == 0;
        if flags & RESERVED != 0 || will_bits_without_will || password_without_username {
            return Err(DecodeError::InvalidConnectFlags);
        }
        let properties = if version.is_v5() {
            Properties::decode(&mut r, Context::Connect)?
        } else {
            Properties::EMPTY
        };

        let client_id = r.string()?;
        let will = if has_will {
            let qos = QoS::from_u8((flags & WILL_QOS_MASK) >> WILL_QOS_SHIFT)
                .ok_or(DecodeError::InvalidQoS)?;
            let properties = if version.is_v5() {
                Properties::decode(&mut r, Context::Will)?
            } else {
                Properties::EMPTY
            };
            let topic = r.string()?;
            validate_topic_name(topic).map_err(DecodeError::InvalidTopic)?;
            let message = r.binary()?;
            Some(LastWill {
                topic,
                message,
                qos,
                retain: flags & WILL_RETAIN != 0,
                properties,
            })
        } else {
            None
        };
        let username = if flags & USERNAME != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let password = if flags & PASSWORD != 0 {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Connect {
            protocol_name,
            protocol_level,
            client_id,
            clean_session,
            keep_alive,
            username,
            password,
            will,
            properties,
        })
    }

    /// The version the CONNECT's name and level say, if this codec speaks it.
    pub fn version(&self) -> Option<Version> {
        version_of(self.protocol_name, self.protocol_level)
    }

    /// The version whose layout encoding writes: the CONNECT's, or 3.1.1's for a level this
    /// codec does not speak.
    fn layout(&self) -> Version {
        self.version().unwrap_or(Version::V3_1_1)
    }

    /// The connect flags byte (section 3.1.2.3).
    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        if let Some(will) = &self.will {
            flags |= WILL | (will.qos.as_u8() << WILL_QOS_SHIFT);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.clean_session {
            flags |= CLEAN_SESSION;
        }
        flags
    }

    /// The remaining length, after checking every field.
    pub(super) fn body_len(&self) -> Result<usize, EncodeError> {
        let v = self.layout();
        if !v.is_v5() && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::InvalidFlags);
        }
        // Protocol name, level, flags, keep alive.
        let mut len = 2 + self.protocol_name.as_bytes().len() + 4;
        if v.is_v5() {
            len = add(len, self.properties.encoded_len()?)?;
        }
        len = add(len, string_len(self.client_id)?)?;
        if let Some(will) = &self.will {
            if v.is_v5() {
                len = add(len, will.properties.encoded_len()?)?;
            }
            validate_topic_name(will.topic).map_err(EncodeError::InvalidTopic)?;
            len = add(len, string_len(will.topic)?)?;
            len = add(len, binary_len(will.message)?)?;
        }
        if let Some(username) = self.username {
            len = add(len, string_len(username)?)?;
        }
        if let Some(password) = self.password {
            len = add(len, binary_len(password)?)?;
        }
        Ok(len)
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let v = self.layout();
        w.binary(self.protocol_name.as_bytes())?;
        w.u8(self.protocol_level)?;
        w.u8(self.flags())?;
        w.u16(self.keep_alive)?;
        if v.is_v5() {
            self.properties.write(w)?;
        }
        w.string(self.client_id)?;
        if let Some(will) = &self.will {
            if v.is_v5() {
                will.properties.write(w)?;
            }
            w.string(will.topic)?;
            w.binary(will.message)?;
        }
        if let Some(username) = self.username {
            w.string(username)?;
        }
        if let Some(password) = self.password {
            w.binary(password)?;
        }
        Ok(())
    }
}

/// The version of a CONNECT with `name` and `level`, if this codec speaks it.
const fn version_of(name: ProtocolName, level: u8) -> Option<Version> {
    match (name, Version::from_level(level)) {
        (ProtocolName::MqIsdp, Some(Version::V3_1)) => Some(Version::V3_1),
        (ProtocolName::Mqtt, Some(Version::V3_1_1)) => Some(Version::V3_1_1),
        (ProtocolName::Mqtt, Some(Version::V5)) => Some(Version::V5),
        _ => None,
    }
}
