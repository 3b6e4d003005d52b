//! DNS on the wire: one query or one TSIG-signed UPDATE to one server, over UDP with a
//! TCP fallback, bounded by a per-exchange timeout. Messages are built and parsed with
//! `hickory-proto`; the sockets are plain tokio ones, so each exchange costs one
//! datagram each way (a fresh socket per exchange: the kernel randomises the source port,
//! and an answer can only come from the server the socket is connected to).
//!
//! - Queries: UDP with EDNS (1232-byte payload), sent again once after a third of the
//!   timeout without an answer; a truncated answer (TC) is asked again over TCP.
//! - UPDATEs: UDP when the signed message fits in 1232 bytes, TCP otherwise (or when the
//!   UDP answer is truncated); never retransmitted over UDP, so a lost answer is a timeout
//!   the caller retries after re-reading the zone. The answer's TSIG is verified.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::{Name, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::{rcode_name, DnsError};

/// Largest message sent or expected over UDP (the DNS flag day 2020 value).
pub const UDP_PAYLOAD: u16 = 1232;

/// Default bound on one exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most exchanges in flight at once per [`Wire`] (each holds a socket): a burst of 500
/// observations must not run the process out of file descriptors.
pub const MAX_IN_FLIGHT: usize = 256;

/// Sends queries and UPDATEs to DNS servers.
#[derive(Debug, Clone)]
pub struct Wire {
    timeout: Duration,
    in_flight: Arc<Semaphore>,
}

impl Wire {
    /// A client whose every exchange is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Wire {
        Wire {
            timeout,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The per-exchange timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks `server` for `name`/`rtype` (no recursion) and returns the decoded answer,
    /// whatever its RCODE.
    pub async fn query(&self, server: SocketAddr, name: &Name, rtype: RecordType) -> Result<Message, DnsError> {
        self.ask(server, name, rtype, false).await
    }

    /// Like [`Wire::query`], asking a recursive resolver to recurse.
    pub async fn query_recursive(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Message, DnsError> {
        self.ask(server, name, rtype, true).await
    }

    async fn ask(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
        recurse: bool,
    ) -> Result<Message, DnsError> {
        let mut msg = Message::query();
        msg.metadata.recursion_desired = recurse;
        msg.add_query(Query::query(name.clone(), rtype));
        msg.edns = Some(edns());
        let what = format!("{name} {rtype}");
        let bytes = encode(&msg, server, &what)?;
        let mut raw = self.udp(server, &bytes, msg.metadata.id, &what, true).await?;
        let mut answer = decode(&raw, server, &what)?;
        if answer.metadata.truncation {
            raw = self.tcp(server, &bytes, msg.metadata.id, &what).await?;
            answer = decode(&raw, server, &what)?;
        }
        if answer.queries.first().map(|q| (q.name(), q.query_type())) != Some((name, rtype)) {
            return Err(DnsError::Unexpected {
                server,
                what,
                detail: "an answer to a different question".into(),
            });
        }
        Ok(answer)
    }

    /// Signs `update` with `signer`, sends it to `server` and checks the answer: `Ok` only
    /// for NOERROR with a valid TSIG; every other outcome is a typed error naming `zone`.
    pub async fn update(
        &self,
        server: SocketAddr,
        mut update: Message,
        signer: &TSigner,
        zone: &Name,
    ) -> Result<Message, DnsError> {
        let key = signer.signer_name().to_string().trim_end_matches('.').to_string();
        let what = format!("an UPDATE of zone {zone}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut verifier = update
            .finalize(signer, now)
            .map_err(|e| DnsError::Unexpected {
                server,
                what: what.clone(),
                detail: format!("signing failed: {e}"),
            })?
            .ok_or_else(|| DnsError::Unexpected {
                server,
                what: what.clone(),
                detail: "signing produced no verifier".into(),
            })?;
        let bytes = encode(&update, server, &what)?;
        let id = update.metadata.id;
        let mut raw = if bytes.len() <= UDP_PAYLOAD as usize {
            self.udp(server, &bytes, id, &what, false).await?
        } else {
            self.tcp(server, &bytes, id, &what).await?
        };
        let mut answer = decode(&raw, server, &what)?;
        if answer.metadata.truncation {
            raw = self.tcp(server, &bytes, id, &what).await?;
            answer = decode(&raw, server, &what)?;
        }
        if let Some(tsig) = answer.signature() {
            match tsig.data.error {
                Some(TsigError::BadSig) => return Err(DnsError::BadSig { server, key }),
                Some(TsigError::BadKey) => return Err(DnsError::BadKey { server, key }),
                Some(TsigError::BadTime) => return Err(DnsError::BadTime { server, key }),
                _ => {}
            }
        }
        let zone_s = zone.to_string();
        match answer.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::Refused => return Err(DnsError::UpdateRefused { server, zone: zone_s }),
            rc @ (ResponseCode::NotAuth | ResponseCode::NotZone) => {
                return Err(DnsError::ZoneNotServed {
                    server: server.to_string(),
                    zone: zone_s,
                    rcode: rcode_name(rc),
                })
            }
            ResponseCode::ServFail => return Err(DnsError::ServFail { server, what }),
            rc @ (ResponseCode::NXRRSet | ResponseCode::YXRRSet | ResponseCode::NXDomain | ResponseCode::YXDomain) => {
                return Err(DnsError::PrerequisiteFailed {
                    server,
                    what: format!("in zone {zone_s}"),
                    rcode: rcode_name(rc),
                })
            }
            rc => {
                return Err(DnsError::Unexpected {
                    server,
                    what,
                    detail: rcode_name(rc),
                })
            }
        }
        if answer.signature().is_none() {
            return Err(DnsError::BadResponseSignature {
                server,
                reason: "the answer to a signed UPDATE is not signed".into(),
            });
        }
        verifier.verify(&raw).map_err(|e| DnsError::BadResponseSignature {
            server,
            reason: e.to_string(),
        })?;
        Ok(answer)
    }

    async fn udp(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        id: u16,
        what: &str,
        resend: bool,
    ) -> Result<Vec<u8>, DnsError> {
        let io = |e: std::io::Error| DnsError::Unreachable {
            server,
            reason: e.to_string(),
        };
        let _permit = self.in_flight.acquire().await.expect("the semaphore is never closed");
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sock = UdpSocket::bind(local).await.map_err(io)?;
        sock.connect(server).await.map_err(io)?;
        sock.send(bytes).await.map_err(io)?;
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut resend_at = resend.then(|| start + self.timeout / 3);
        let mut buf = vec![0u8; 65_535];
        loop {
            let until = resend_at.unwrap_or(deadline).min(deadline);
            match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
                Ok(Ok(n)) if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id => return Ok(buf[..n].to_vec()),
                Ok(Ok(_)) => {} // a stray or late datagram: keep waiting
                Ok(Err(e)) => return Err(io(e)),
                Err(_) if Instant::now() >= deadline => {
                    return Err(DnsError::Timeout {
                        server,
                        what: what.to_string(),
                        timeout: self.timeout,
                    })
                }
                Err(_) => {
                    resend_at = None;
                    sock.send(bytes).await.map_err(io)?;
                }
            }
        }
    }

    async fn tcp(&self, server: SocketAddr, bytes: &[u8], id: u16, what: &str) -> Result<Vec<u8>, DnsError> {
        let io = |e: std::io::Error| DnsError::Unreachable {
            server,
            reason: format!("TCP: {e}"),
        };
        let _permit = self.in_flight.acquire().await.expect("the semaphore is never closed");
        let exchange = async {
            let mut stream = TcpStream::connect(server).await.map_err(io)?;
            stream.set_nodelay(true).map_err(io)?;
            let len = u16::try_from(bytes.len()).map_err(|_| DnsError::Unexpected {
                server,
                what: what.to_string(),
                detail: format!("a {}-byte message does not fit a DNS TCP frame", bytes.len()),
            })?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(bytes);
            stream.write_all(&framed).await.map_err(io)?;
            loop {
                let n = stream.read_u16().await.map_err(io)? as usize;
                let mut buf = vec![0u8; n];
                stream.read_exact(&mut buf).await.map_err(io)?;
                if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                    return Ok(buf);
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange).await.unwrap_or_else(|_| {
            Err(DnsError::Timeout {
                server,
                what: format!("{what} (TCP)"),
                timeout: self.timeout,
            })
        })
    }
}

/// A NOTIFY for `zone` (what a primary sends its secondaries), e.g. to make a secondary
/// catch up at once in tests.
pub fn notify_message(zone: &Name) -> Message {
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Notify;
    msg.metadata.authoritative = true;
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(zone.clone(), RecordType::SOA));
    msg
}

/// Sends a message and returns the raw answer (no checks): for NOTIFY and diagnostics.
pub async fn exchange_raw(wire: &Wire, server: SocketAddr, msg: &Message) -> Result<Message, DnsError> {
    let what = format!("{} message", msg.metadata.op_code);
    let bytes = encode(msg, server, &what)?;
    let raw = wire.udp(server, &bytes, msg.metadata.id, &what, true).await?;
    decode(&raw, server, &what)
}

fn edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD).set_version(0);
    edns
}

fn encode(msg: &Message, server: SocketAddr, what: &str) -> Result<Vec<u8>, DnsError> {
    msg.to_vec().map_err(|e| DnsError::Unexpected {
        server,
        what: what.to_string(),
        detail: format!("cannot encode the message: {e}"),
    })
}

fn decode(raw: &[u8], server: SocketAddr, what: &str) -> Result<Message, DnsError> {
    let msg = Message::from_vec(raw).map_err(|e| DnsError::Unexpected {
        server,
        what: what.to_string(),
        detail: format!("an undecodable answer: {e}"),
    })?;
    if msg.metadata.message_type != MessageType::Response {
        return Err(DnsError::Unexpected {
            server,
            what: what.to_string(),
            detail: "a message that is not a response".into(),
        });
    }
    Ok(msg)
}
