//! The client-identifier rules applied at CONNECT (MQTT 3.1.1 section 3.1.3.1).
//!
//! mqtt-activity publishes its events as the reserved client id [`RESERVED_CLIENT_ID`]
//! (`broker`), so no real client may use it: a CONNECT with that id is refused with CONNACK
//! return code 0x02, *identifier rejected* (section 3.2.2.3). The same code refuses an empty id
//! with `clean_session = 0` (section 3.1.3.1) and ids longer than [`CLIENT_ID_CAPACITY`], the
//! fixed capacity the core stores per connection.

use core::fmt;

/// The client id under which the broker itself publishes activity events.
pub const RESERVED_CLIENT_ID: &str = "broker";

/// The longest client id, in bytes, that the core accepts and stores.
///
/// MQTT 3.1.1 requires servers to accept 1 to 23 bytes and allows more; 128 covers the ids that
/// cloud IoT platforms hand out (for example UUID-based ids with a product prefix).
pub const CLIENT_ID_CAPACITY: usize = 128;

/// CONNACK return code 0x02, *identifier rejected* (MQTT 3.1.1 section 3.2.2.3).
pub const IDENTIFIER_REJECTED: u8 = 0x02;

/// Why a client id was refused at CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ClientIdError {
    /// The id is [`RESERVED_CLIENT_ID`], which only the broker itself may use.
    Reserved,
    /// The id is empty and the client asked for a persistent session (section 3.1.3.1).
    EmptyWithPersistentSession,
    /// The id is longer than [`CLIENT_ID_CAPACITY`] bytes.
    TooLong,
}

impl ClientIdError {
    /// The CONNACK return code that refuses the connection: always 0x02, identifier rejected.
    pub const fn return_code(self) -> u8 {
        IDENTIFIER_REJECTED
    }
}

impl fmt::Display for ClientIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientIdError::Reserved => {
                write!(
                    f,
                    "client id `{RESERVED_CLIENT_ID}` is reserved for the broker"
                )
            }
            ClientIdError::EmptyWithPersistentSession => {
                f.write_str("an empty client id requires clean_session = 1")
            }
            ClientIdError::TooLong => {
                write!(f, "client id longer than {CLIENT_ID_CAPACITY} bytes")
            }
        }
    }
}

impl core::error::Error for ClientIdError {}

/// Whether `client_id` is the reserved id of the broker itself (exact, case-sensitive match, as
/// MQTT client ids are case-sensitive).
pub fn is_reserved(client_id: &str) -> bool {
    client_id == RESERVED_CLIENT_ID
}

/// Checks a client id from a CONNECT packet; `Err` means: answer CONNACK 0x02 and close.
///
/// An empty id with `clean_session = true` passes: the server assigns an id (section 3.1.3.1).
pub fn check_client_id(client_id: &str, clean_session: bool) -> Result<(), ClientIdError> {
    if is_reserved(client_id) {
        Err(ClientIdError::Reserved)
    } else if client_id.is_empty() && !clean_session {
        Err(ClientIdError::EmptyWithPersistentSession)
    } else if client_id.len() > CLIENT_ID_CAPACITY {
        Err(ClientIdError::TooLong)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_id_is_refused_with_identifier_rejected() {
        for clean in [true, false] {
            let err = check_client_id("broker", clean).unwrap_err();
            assert_eq!(err, ClientIdError::Reserved);
            assert_eq!(err.return_code(), 0x02);
        }
    }

    #[test]
    fn lookalikes_of_the_reserved_id_are_ordinary_ids() {
        for id in [
            "Broker", "BROKER", "broker ", " broker", "brokers", "broke", "broker/1",
        ] {
            assert_eq!(check_client_id(id, true), Ok(()), "{id:?}");
            assert!(!is_reserved(id));
        }
    }

    #[test]
    fn empty_id_needs_a_clean_session() {
        assert_eq!(check_client_id("", true), Ok(()));
        assert_eq!(
            check_client_id("", false),
            Err(ClientIdError::EmptyWithPersistentSession)
        );
    }

    #[test]
    fn length_limit_is_inclusive() {
        let max = "a".repeat(CLIENT_ID_CAPACITY);
        assert_eq!(check_client_id(&max, false), Ok(()));
        let over = "a".repeat(CLIENT_ID_CAPACITY + 1);
        assert_eq!(check_client_id(&over, false), Err(ClientIdError::TooLong));
    }

    #[test]
    fn errors_display_their_cause() {
        let text = ClientIdError::Reserved.to_string();
        assert!(text.contains("broker"), "{text}");
    }
}
