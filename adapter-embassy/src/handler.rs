//! What the gateway does with each packet a client sends (MQTT 3.1.1 chapter 3).
//!
//! Every answer to the client (CONNACK, SUBACK, PUBACK, ...) goes into the client's own packet
//! queue, behind the deliveries already there; the slot future writes it to the socket. The
//! slot future only decodes a packet while the queue has [`RESPONSE_RESERVE`] bytes free, so
//! an answer always fits.

use activity_core::QoS;
use activity_core::client_id::{CLIENT_ID_CAPACITY, check_client_id};
use activity_core::codec::{
    ConnAck, Connect, ConnectReturnCode, PROTOCOL_LEVEL, Packet, Publish, SubAck, SubAckCode,
    SubAckCodes, Subscribe, Unsubscribe,
};
use activity_core::event::DisconnectReason;
use activity_core::tracker::{ConnectInfo, PublishInfo, PublishOutcome, Tracker};
use heapless::{String, Vec};

use crate::router::{
    Acks, Core, Ctx, FILTER_CAPACITY, Message, Subscription, WILL_PAYLOAD_CAPACITY,
    WILL_TOPIC_CAPACITY, Will, assigned_client_id, emit, encode_event,
};
use crate::stats::bump;

/// The most topic filters one SUBSCRIBE may carry; more close the connection.
pub const MAX_FILTERS_PER_SUBSCRIBE: usize = 16;

/// Free queue bytes needed before the next packet is decoded: the largest answer, a SUBACK
/// for [`MAX_FILTERS_PER_SUBSCRIBE`] filters (2 + 2 + 16 bytes), rounded up.
pub(crate) const RESPONSE_RESERVE: usize = 24;

/// What the slot future does after a packet.
pub(crate) enum Flow {
    /// Go on reading.
    Continue,
    /// The CONNECT was accepted; the keep-alive in seconds (0: none).
    Connected(u16),
    /// Send what is queued, then close with this reason.
    Close(DisconnectReason),
}

impl<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize> Core<CLIENTS, SUBS, QUEUE> {
    /// Handles one decoded packet from slot `i`. `peer` is the client's address as text.
    pub(crate) fn handle_packet(
        &mut self,
        ctx: &Ctx<'_>,
        i: usize,
        packet: Packet<'_>,
        peer: Option<&str>,
        now: u64,
    ) -> Flow {
        let connected = self.clients[i].is_connected();
        match packet {
            Packet::Connect(connect) if !connected => {
                self.handle_connect(ctx, i, connect, peer, now)
            }
            _ if !connected => protocol_error(ctx),
            Packet::Publish(publish) => self.handle_publish(ctx, i, publish, now),
            Packet::PubAck(pkid) => {
                emit!(self, ctx, i, |t| t.handle_puback(now, pkid));
                Flow::Continue
            }
            Packet::PubRel(pkid) => {
                let client = &mut self.clients[i];
                client.inbound_qos2.retain(|p| *p != pkid);
                self.respond(ctx, i, &Packet::PubComp(pkid))
            }
            // The gateway never delivers at QoS 2, so no PUBREC or PUBCOMP is expected.
            Packet::PubRec(_) | Packet::PubComp(_) => Flow::Continue,
            Packet::Subscribe(subscribe) => self.handle_subscribe(ctx, i, subscribe, now),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(ctx, i, unsubscribe, now),
            Packet::PingReq => self.respond(ctx, i, &Packet::PingResp),
            Packet::Disconnect => Flow::Close(DisconnectReason::Normal),
            // A second CONNECT (section 3.1.0) or a packet only a server sends.
            _ => protocol_error(ctx),
        }
    }

    /// Queues an answer for slot `i` (room was checked before decoding).
    fn respond(&mut self, ctx: &Ctx<'_>, i: usize, packet: &Packet<'_>) -> Flow {
        if self.clients[i].out.push(packet).is_err() {
            // Cannot happen with RESPONSE_RESERVE free; close rather than lose an answer.
            return protocol_error(ctx);
        }
        ctx.wake[i].signal(());
        Flow::Continue
    }

    /// Queues a refusing CONNACK and closes (no event: the client never connected).
    fn refuse(&mut self, ctx: &Ctx<'_>, i: usize, code: ConnectReturnCode) -> Flow {
        info!("gateway: CONNECT refused with code {}", code.as_u8());
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            code,
        });
        let _ = self.respond(ctx, i, &connack);
        Flow::Close(DisconnectReason::ProtocolError)
    }

    /// CONNECT (section 3.1): protocol level, client id, credentials, will; takeover of the
    /// same id.
    fn handle_connect(
        &mut self,
        ctx: &Ctx<'_>,
        i: usize,
        connect: Connect<'_>,
        peer: Option<&str>,
        now: u64,
    ) -> Flow {
        let counters = ctx.counters;
        if connect.protocol_level != PROTOCOL_LEVEL {
            bump(&counters.refused_other);
            return self.refuse(ctx, i, ConnectReturnCode::UnacceptableProtocolVersion);
        }
        if let Err(e) = check_client_id(connect.client_id, connect.clean_session) {
            bump(&counters.refused_other);
            let code = ConnectReturnCode::from_u8(e.return_code())
                .unwrap_or(ConnectReturnCode::IdentifierRejected);
            return self.refuse(ctx, i, code);
        }
        if let Some(code) = ctx
            .config
            .auth
            .as_ref()
            .and_then(|auth| auth.check(connect.username, connect.password))
        {
            bump(&counters.refused_auth);
            return self.refuse(ctx, i, code);
        }
        let mut will = None;
        if let Some(w) = connect.will {
            if ctx.config.tracker.topics.is_system_topic(w.topic) {
                bump(&counters.refused_other);
                return self.refuse(ctx, i, ConnectReturnCode::NotAuthorized);
            }
            let (Ok(topic), Ok(payload)) = (
                String::<WILL_TOPIC_CAPACITY>::try_from(w.topic),
                Vec::<u8, WILL_PAYLOAD_CAPACITY>::from_slice(w.message),
            ) else {
                bump(&counters.refused_no_buffer);
                return self.refuse(ctx, i, ConnectReturnCode::ServerUnavailable);
            };
            will = Some(Will {
                topic,
                payload,
                qos: w.qos,
                retain: w.retain,
            });
        }
        let client_id: String<CLIENT_ID_CAPACITY> = if connect.client_id.is_empty() {
            assigned_client_id(i, counters.clients_connected.get())
        } else {
            // check_client_id limits the id to CLIENT_ID_CAPACITY bytes.
            String::try_from(connect.client_id).unwrap_or_default()
        };
        if let Some(old) = self.find_client(&client_id, i) {
            self.close_client(ctx, old, now, DisconnectReason::Takenover);
            ctx.wake[old].signal(());
        }
        let client = &mut self.clients[i];
        client.tracker = Some(Tracker::new(ctx.config.tracker.clone(), Acks::new()));
        client.will = will;
        client.may_subscribe_system = ctx
            .config
            .system_subscribers
            .iter()
            .any(|id| *id == client_id.as_str());
        // Clean sessions only: a client asking for a persistent one gets a fresh session and
        // is told so with session_present = 0 (section 3.2.2.2).
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            code: ConnectReturnCode::Accepted,
        });
        let _ = self.respond(ctx, i, &connack);
        bump(&counters.clients_connected);
        info!("gateway: client connected");
        let info = ConnectInfo {
            client_id: &client_id,
            username: connect.username,
            proto_ver: connect.protocol_level,
            keepalive: connect.keep_alive,
            clean_session: connect.clean_session,
            peer,
        };
        let core = &mut *self;
        let encoded = match core.clients[i].tracker.as_mut() {
            Some(t) => match t.handle_connect(now, info) {
                Ok(event) => encode_event(ctx, event, &mut core.scratch),
                // check_client_id passed above, and the tracker is new.
                Err(_) => None,
            },
            None => None,
        };
        core.publish_event(ctx, encoded);
        Flow::Connected(connect.keep_alive)
    }

    /// PUBLISH (section 3.3): acknowledge, route (QoS 2 delivered at QoS 1), `message` event.
    fn handle_publish(&mut self, ctx: &Ctx<'_>, i: usize, publish: Publish<'_>, now: u64) -> Flow {
        let pkid = publish.pkid.unwrap_or(0);
        let (ack, duplicate) = match publish.qos {
            QoS::AtMostOnce => (None, false),
            QoS::AtLeastOnce => (Some(Packet::PubAck(pkid)), false),
            QoS::ExactlyOnce => {
                // Section 4.3.3: a resent PUBLISH before PUBREL is not delivered again.
                let inflight = &mut self.clients[i].inbound_qos2;
                let duplicate = inflight.contains(&pkid);
                if !duplicate && inflight.push(pkid).is_err() {
                    warn!("gateway: too many QoS 2 publishes awaiting PUBREL");
                }
                (Some(Packet::PubRec(pkid)), duplicate)
            }
        };
        if !duplicate {
            let core = &mut *self;
            let info = PublishInfo {
                topic: publish.topic,
                payload: publish.payload,
                qos: publish.qos,
                retain: publish.retain,
            };
            let mut publisher = String::<CLIENT_ID_CAPACITY>::new();
            let outcome = match core.clients[i].tracker.as_mut() {
                Some(t) => {
                    // Both are CLIENT_ID_CAPACITY strings.
                    let _ = publisher.push_str(t.client_id());
                    match t.handle_publish(now, info) {
                        PublishOutcome::Accepted(event) => {
                            Some(encode_event(ctx, event, &mut core.scratch))
                        }
                        PublishOutcome::Denied => None,
                    }
                }
                None => None,
            };
            match outcome {
                Some(encoded) => {
                    core.route_message(
                        ctx,
                        &Message {
                            topic: publish.topic,
                            payload: publish.payload,
                            qos: publish.qos.min(QoS::AtLeastOnce),
                            publisher: Some(&publisher),
                        },
                    );
                    core.publish_event(ctx, encoded);
                }
                None => bump(&ctx.counters.publishes_denied),
            }
        }
        match ack {
            Some(ack) => self.respond(ctx, i, &ack),
            None => Flow::Continue,
        }
    }

    /// SUBSCRIBE (section 3.8): one SUBACK code per filter, QoS 2 granted as QoS 1.
    fn handle_subscribe(
        &mut self,
        ctx: &Ctx<'_>,
        i: usize,
        subscribe: Subscribe<'_>,
        now: u64,
    ) -> Flow {
        let mut codes = Vec::<SubAckCode, MAX_FILTERS_PER_SUBSCRIBE>::new();
        for (filter, requested) in subscribe.filters.iter() {
            let client = &mut self.clients[i];
            let qos = requested.min(QoS::AtLeastOnce);
            let system = ctx.config.tracker.topics.filter_receives_events(filter);
            let existing = client.subs.iter().position(|s| s.filter == filter);
            let granted = if system && !client.may_subscribe_system {
                None
            } else if let Some(at) = existing {
                client.subs[at].qos = qos;
                Some(qos)
            } else {
                match String::<FILTER_CAPACITY>::try_from(filter) {
                    Ok(filter) => client
                        .subs
                        .push(Subscription { filter, qos })
                        .ok()
                        .map(|()| qos),
                    Err(_) => None,
                }
            };
            if granted.is_none() {
                bump(&ctx.counters.subscriptions_refused);
            }
            let code = granted.map_or(SubAckCode::Failure, SubAckCode::Success);
            if codes.push(code).is_err() {
                return protocol_error(ctx);
            }
        }
        let suback = Packet::SubAck(SubAck {
            pkid: subscribe.pkid,
            codes: SubAckCodes::from_slice(&codes),
        });
        let flow = self.respond(ctx, i, &suback);
        // The events follow the SUBACK, so the subscriber's own event comes after it.
        for ((filter, _), code) in subscribe.filters.iter().zip(codes) {
            if let SubAckCode::Success(qos) = code {
                emit!(self, ctx, i, |t| t.handle_subscribe(now, filter, Some(qos)));
            }
        }
        flow
    }

    /// UNSUBSCRIBE (section 3.10): always an UNSUBACK; an event per filter that was held.
    fn handle_unsubscribe(
        &mut self,
        ctx: &Ctx<'_>,
        i: usize,
        unsubscribe: Unsubscribe<'_>,
        now: u64,
    ) -> Flow {
        for filter in unsubscribe.filters.iter() {
            let subs = &mut self.clients[i].subs;
            if let Some(at) = subs.iter().position(|s| s.filter == filter) {
                subs.swap_remove(at);
                emit!(self, ctx, i, |t| t.handle_unsubscribe(now, filter));
            }
        }
        self.respond(ctx, i, &Packet::UnsubAck(unsubscribe.pkid))
    }
}

/// Counts a protocol violation and closes.
fn protocol_error(ctx: &Ctx<'_>) -> Flow {
    bump(&ctx.counters.protocol_errors);
    Flow::Close(DisconnectReason::ProtocolError)
}
