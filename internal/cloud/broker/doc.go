// Package broker is the embedded MQTT broker of `moat cloud`: a nats-server
// (github.com/nats-io/nats-server/v2, embedded with server.NewServer) with its MQTT
// 3.1.1 listener over TLS for devices and JetStream on disk, so QoS 1 messages and
// persistent MQTT sessions survive a restart. The cloud's ingest and diagnostics use
// it through an in-process NATS client ([Broker.Conn]).
//
// # What it trusts
//
// Exactly one thing from the security service: the tenant's device CA chain as
// `moat ca-certificate download` writes it (Config.DeviceCAs: the tenant CAs, then the
// platform root), and the clock it is given (Config.Now). Every CA of the file must
// name one tenant (and Config.TenantID when set). nats-server itself is trusted to run
// the MQTT protocol, to apply the permissions given to each connection, and to keep
// the client-ID form the authenticator reads (see below).
//
// # What it enforces
//
// Admission (DESIGN rule 1; ATTACKS row 8), in the server's CustomClientAuthentication:
//   - a device certificate is required at the TLS handshake (TLS 1.2 or later) and is
//     verified with deviceca.VerifyDevice against the chain file's CAs only (never
//     what the client sends along): chained to a trusted tenant CA and the root,
//     valid at Config.Now, for client authentication, its URI naming the tenant of
//     the issuing CA, which must be the broker's tenant. Expired, not yet valid,
//     another tenant's, self-signed and missing certificates are refused:
//     TestBroker_RejectsBadCertificates;
//   - the MQTT client ID must be the certificate's device ID, or device A could take
//     over B's persistent session (row 32): TestBroker_RejectsClientIDOfAnotherDevice
//     (also "#", "+", "$SYS"). nats-server does not hand the client ID to an
//     authenticator; it writes it into the connection's description just before
//     authenticating, which the authenticator parses strictly and fails closed on.
//     A nats-server upgrade that changes the form refuses every device, which
//     TestBroker_ValidDevicePublishes and TestBroker_PahoPublishes catch;
//     FuzzMQTTClientID feeds the parser junk;
//   - the MQTT user name names the device's product (1 to 64 of A-Z a-z 0-9 _ . -,
//     such as DW100); passwords are ignored. It is a label for OnConnect and grants
//     nothing: TestBroker_RejectsBadProductNames, and a user name that is another
//     device's ID gets nothing of that device (TestBroker_RejectsClientIDOfAnotherDevice);
//   - the connection ends when the certificate does (User.ConnectionDeadline), so a
//     device whose software stops attesting, and so gets no new certificate, loses
//     its cloud within a day: TestBroker_RetainedAndWillOfExpiredDeviceReachNoOne;
//   - no NATS client port is bound (Options.DontListen): only the in-process client,
//     with a 256-bit secret made at Open, gets in without a certificate
//     (TestBroker_RejectsNATSClients, TestCheck_RejectsNonMQTTClients,
//     TestServerOptions_NoNATSClientPort). A clustered server must bind one, on a
//     random loopback port, because nats-server starts its routes only after its
//     client listener.
//
// Topic permissions per device (NATS subjects: MQTT topics with '/' as '.'):
//
//	publish    devices.<id>.telemetry
//	           devices.<id>.events
//	           devices.<id>.diagnostics.*.reply
//	subscribe  devices.<id>.diagnostics.*
//	           $MQTT.sub.>   (nats-server's QoS 1 delivery inboxes; MQTT clients
//	                          cannot SUBSCRIBE under $MQTT. themselves)
//
// A publish elsewhere (another device's topics, a diagnostics request, even to
// itself) is PUBACKed, as MQTT 3.1.1 has no refusal, and dropped: nothing is stored
// (TestBroker_RejectsPublishToAnotherDevice). A subscription elsewhere, every wildcard
// beyond the device's own requests included (#, +/+/telemetry, $SYS/#,
// devices/+/telemetry, devices/<other>/#, $MQTT/msgs/#), gets SUBACK 0x80 and no
// message, retained or queued (row 33: TestBroker_RejectsWildcards,
// TestBroker_PahoPublishes). QoS 2 subscriptions fail (no $MQTT.deliver.pubrel.>):
// devices use QoS 1.
//
// Retained and will messages (row 34): no device may subscribe to any topic a device
// may publish on, so no retained message and no will of a device can ever reach
// another subscriber, a device or the same device with a new certificate. A will
// published when the broker closes an expired device's connection obeys the device's
// permissions like any publish, and at most lands in the stream as that device's own
// message. Retained messages are kept (nats-server's MQTT has no switch to refuse
// them) in a store bounded to one per topic and MaxRetainedBytes:
// TestBroker_RetainedAndWillOfExpiredDeviceReachNoOne.
//
// Storage: a device's QoS 1 publish is stored by nats-server under
// telemetry.StoredPrefix + subject, and the stream telemetry.Stream captures exactly
// those subjects (telemetry.StreamSubjects), so the PUBACK a device gets means "on disk
// in the stream the ingest reads" (fsynced first with SyncAlways):
// TestBroker_PubAckedSurvivesRestart. QoS 0 publishes are not stored. nats-server's
// own $MQTT_msgs stream is created by Open with only the devices' request subjects,
// where diagnostics requests wait for a persistent session ([RequestMsg]):
// TestBroker_SessionSurvivesRestart. Each device subject keeps at most
// MaxMsgsPerDevice messages, the oldest dropped first, so a flooding device pushes out
// only its own (issue 13, "Bad input": TestBroker_FloodDropsOnlyOwnMessages); MaxAge
// and MaxBytes bound the stream; every message is at most telemetry.MaxReplyBytes
// (rule 5). Replies are bounded per request ID, not per device: a device that
// answers many made-up request IDs is bounded only by MaxBytes.
//
// The in-process client may do anything but publish on the subjects devices publish
// on, plain or stored: TestBroker_InternalClientCannotForgeDevice.
//
// # Scale-out
//
// Several moat cloud processes join their embedded servers into one NATS cluster
// with routes (no home-made clustering): each sets a unique ServerName, the same
// ClusterName and ClusterSecret (at least 32 characters; routes present it both
// ways, and a route without it is refused: TestBroker_Cluster), ClusterListen for
// the others' routes, Routes to the others, and StreamReplicas 3. JetStream then keeps
// the stream, the sessions and the requests on three servers; a device may connect to
// any of them and the ingest may read from any (TestBroker_Cluster). Routes are not
// TLS: run them on a private network.
//
// Concurrency: a Broker's methods are safe for concurrent use; OnConnect runs on the
// connecting device's goroutine and must not block.
package broker
