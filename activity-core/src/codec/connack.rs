//! CONNACK, the server's answer to CONNECT (MQTT 3.1.1 section 3.2, MQTT 5.0 section 3.2).
//!
//! Fixed header `0x20`; variable header: acknowledge flags (bit 0 is Session Present, bits 7-1
//! reserved, 3.2.2.1) and the return code (3.2.2.3) or, in MQTT 5, the reason code and the
//! properties (5.0 3.2.2.2, 3.2.2.3); no payload.

use super::ack::reason_in;
use super::properties::{Context, Properties};
use super::wire::add;
use super::{DecodeError, EncodeError, Reader, Version, Writer};

/// The CONNACK return code (section 3.2.2.3, table 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum ConnectReturnCode {
    /// 0x00: connection accepted.
    Accepted = 0,
    /// 0x01: the server does not support the protocol level the client asked for.
    UnacceptableProtocolVersion = 1,
    /// 0x02: the client identifier is well-formed UTF-8 but not allowed by the server.
    IdentifierRejected = 2,
    /// 0x03: the network connection is up but the MQTT service is unavailable.
    ServerUnavailable = 3,
    /// 0x04: the user name or password is malformed.
    BadUserNameOrPassword = 4,
    /// 0x05: the client is not authorized to connect.
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The return code for a wire value, or `None` for the reserved values 6 to 255.
    pub const fn from_u8(value: u8) -> Option<ConnectReturnCode> {
        Some(match value {
            0 => ConnectReturnCode::Accepted,
            1 => ConnectReturnCode::UnacceptableProtocolVersion,
            2 => ConnectReturnCode::IdentifierRejected,
            3 => ConnectReturnCode::ServerUnavailable,
            4 => ConnectReturnCode::BadUserNameOrPassword,
            5 => ConnectReturnCode::NotAuthorized,
            _ => return None,
        })
    }

    /// The wire value, 0 to 5.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The reason codes of an MQTT 5 CONNACK (MQTT 5.0 section 3.2.2.2).
const CONNACK: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

/// A CONNACK packet (section 3.2).
///
/// Decoding does not enforce that a refusal has `session_present == false` (3.2.2.2, a rule
/// for the server that sends it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnAck<'a> {
    /// Whether the server resumes a stored session (section 3.2.2.2).
    pub session_present: bool,
    /// The connect return code (MQTT 3.1.1, a [`ConnectReturnCode`], 0 to 5) or reason code
    /// (MQTT 5, section 3.2.2.2); 0 accepts the connection.
    pub code: u8,
    /// The MQTT 5 properties; empty before MQTT 5.
    pub properties: Properties<'a>,
}

impl<'a> ConnAck<'a> {
    /// A CONNACK of any version with `code` and no properties.
    pub const fn new(session_present: bool, code: u8) -> Self {
        ConnAck {
            session_present,
            code,
            properties: Properties::EMPTY,
        }
    }

    /// The MQTT 3.1.1 return code, if `code` is one.
    pub const fn return_code(&self) -> Option<ConnectReturnCode> {
        ConnectReturnCode::from_u8(self.code)
    }

    /// Decodes the variable header (a CONNACK has no payload).
    pub(super) fn decode(body: &'a [u8], v: Version) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::ReservedBitsSet);
        }
        let code = r.u8()?;
        let mut connack = ConnAck::new(flags & 0x01 != 0, code);
        if v.is_v5() {
            reason_in(code, CONNACK)?;
            connack.properties = Properties::decode(&mut r, Context::ConnAck)?;
        } else if ConnectReturnCode::from_u8(code).is_none() {
            return Err(DecodeError::InvalidConnectReturnCode(code));
        }
        r.finish()?;
        Ok(connack)
    }

    /// The remaining length, after checking the code.
    pub(super) fn body_len(&self, v: Version) -> Result<usize, EncodeError> {
        if v.is_v5() {
            if !super::ack::is_in(self.code, CONNACK) {
                return Err(EncodeError::NotInVersion);
            }
            add(2, self.properties.encoded_len()?)
        } else if ConnectReturnCode::from_u8(self.code).is_some() {
            Ok(2)
        } else {
            Err(EncodeError::NotInVersion)
        }
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        w.u8(u8::from(self.session_present))?;
        w.u8(self.code)?;
        if v.is_v5() {
            self.properties.write(w)?;
        }
        Ok(())
    }
}
