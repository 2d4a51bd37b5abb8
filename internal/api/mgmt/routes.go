package mgmt

import (
	"reflect"

	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/fleet/rollout"
	"github.com/moat-iot/moat/internal/insight"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/trust"
	"github.com/moat-iot/moat/internal/updstate"
)

// AuthRule is who may call a route (see httpapi.AuthRule). The zero value is invalid, so a
// route that forgets its rule is refused at start-up (default deny).
type AuthRule = httpapi.AuthRule

// The authorization rules, re-exported so that the table reads as before.
const (
	// AuthNone: no authentication (health, the OpenAPI document).
	AuthNone = httpapi.AuthNone
	// AuthAny: any authenticated principal, acting on itself.
	AuthAny = httpapi.AuthAny
	// AuthOperator: platform operators only.
	AuthOperator = httpapi.AuthOperator
	// AuthTenant: a principal with at least MinRole in the path's {tenant}.
	AuthTenant = httpapi.AuthTenant
	// AuthDevice: a device, by its client certificate from its tenant's CA (mutual TLS);
	// its tenant is the certificate's, never the path's.
	AuthDevice = httpapi.AuthDevice
	// AuthDeviceProof: a device that has no certificate yet; the body carries its proof
	// (attestation), and the answer to a failed proof says only "refused".
	AuthDeviceProof = httpapi.AuthDeviceProof
)

// handler is what a route of this package runs: the API and the request as handlers see it.
type handler = func(*API, *call) (any, error)

// Route is one entry of the route table: an httpapi.Route whose handler is this package's.
// MaxBodyBytes bounds what the route reads: typed JSON bodies may leave it 0 (MaxBodyBytes);
// raw bodies (c.rawBody, c.pemBody, streamed uploads) declare their own, and
// httpapi.CheckRoutes refuses the table otherwise.
type Route = httpapi.Route[handler]

func typeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

// Routes returns the route table: the only place a management route is declared.
func Routes() []Route {
	const (
		tenantPath  = "/api/v1/tenants/{tenant}"
		productPath = tenantPath + "/products/{product}"
		groupPath   = productPath + "/device-groups/{group}"
		devicePath  = tenantPath + "/devices/{device}"
		pem         = "application/x-pem-file"
	)
	return []Route{
		{Method: "GET", Pattern: "/api/v1/me", OperationID: "getMe", Summary: "Show the calling user, its token and its roles",
			Auth: AuthAny, Response: typeOf[Me](), Status: 200, Handler: (*API).getMe},

		{Method: "GET", Pattern: "/api/v1/tokens", OperationID: "listTokens", Summary: "List the calling user's API tokens",
			Auth: AuthAny, Response: typeOf[auth.Token](), List: true, Status: 200, Handler: (*API).listTokens},
		{Method: "POST", Pattern: "/api/v1/tokens", OperationID: "createToken", Summary: "Create an API token for the calling user; the secret is shown once",
			Auth: AuthAny, Request: typeOf[TokenCreate](), Response: typeOf[TokenCreated](), Status: 201, Handler: (*API).createToken},
		{Method: "DELETE", Pattern: "/api/v1/tokens/{token}", OperationID: "revokeToken", Summary: "Revoke one of the calling user's API tokens",
			Auth: AuthAny, Response: typeOf[auth.Token](), Status: 200, Handler: (*API).revokeToken},

		{Method: "POST", Pattern: "/api/v1/console/sign-in-links", OperationID: "createSignInLink", Summary: "Make a one-time web console sign-in link for the caller (single use, expires within 5 minutes)",
			Auth: AuthAny, Response: typeOf[SignInLink](), Status: 201, Handler: (*API).createSignInLink},

		{Method: "GET", Pattern: "/api/v1/tenants", OperationID: "listTenants", Summary: "List the tenants the caller may see (all of them for a platform operator)",
			Auth: AuthAny, Response: typeOf[tenant.Tenant](), List: true, Filters: []string{"name"}, Status: 200, Handler: (*API).listTenants},
		{Method: "POST", Pattern: "/api/v1/tenants", OperationID: "createTenant", Summary: "Create a tenant; its creator becomes its Administrator",
			Auth: AuthOperator, Request: typeOf[tenant.Create](), Response: typeOf[tenant.Tenant](), Status: 201, Handler: (*API).createTenant},
		{Method: "GET", Pattern: tenantPath, OperationID: "getTenant", Summary: "Show a tenant",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[tenant.Tenant](), Status: 200, Handler: (*API).getTenant},

		{Method: "GET", Pattern: tenantPath + "/members", OperationID: "listMembers", Summary: "List the tenant's users and their roles",
			Auth: AuthTenant, MinRole: auth.Administrator, Response: typeOf[auth.Member](), List: true, Status: 200, Handler: (*API).listMembers},
		{Method: "POST", Pattern: tenantPath + "/members", OperationID: "createMember", Summary: "Create a user with a role in the tenant and its first API token (shown once)",
			Auth: AuthTenant, MinRole: auth.Administrator, Request: typeOf[MemberCreate](), Response: typeOf[MemberCreated](), Status: 201, Handler: (*API).createMember},
		{Method: "PUT", Pattern: tenantPath + "/members/{user}", OperationID: "putMember", Summary: "Change a member's role in the tenant",
			Auth: AuthTenant, MinRole: auth.Administrator, Request: typeOf[MemberPut](), Response: typeOf[auth.Member](), Status: 200, Handler: (*API).putMember},
		{Method: "DELETE", Pattern: tenantPath + "/members/{user}", OperationID: "deleteMember", Summary: "Remove a user's role in the tenant",
			Auth: AuthTenant, MinRole: auth.Administrator, Status: 204, Handler: (*API).deleteMember},

		{Method: "GET", Pattern: tenantPath + "/audit-events", OperationID: "listAuditEvents", Summary: "List the tenant's audit log, oldest first",
			Auth: AuthTenant, MinRole: auth.Administrator, Response: typeOf[audit.Event](), List: true, Status: 200, Handler: (*API).listAudit},

		{Method: "GET", Pattern: tenantPath + "/signing-keys", OperationID: "listSigningKeys", Summary: "List the tenant's registered public signing keys",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[trust.SigningKey](), List: true, Status: 200, Handler: (*API).listSigningKeys},
		{Method: "POST", Pattern: tenantPath + "/signing-keys", OperationID: "createSigningKey", Summary: "Register an offline public signing key (ECDSA P-256 PEM) for the tenant's images",
			Auth: AuthTenant, MinRole: auth.Administrator, Request: typeOf[trust.KeyCreate](), Response: typeOf[trust.SigningKey](), Status: 201, Handler: (*API).createSigningKey},
		{Method: "GET", Pattern: tenantPath + "/signing-keys/{key}", OperationID: "getSigningKey", Summary: "Show a registered signing key",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[trust.SigningKey](), Status: 200, Handler: (*API).getSigningKey},
		{Method: "DELETE", Pattern: tenantPath + "/signing-keys/{key}", OperationID: "revokeSigningKey", Summary: "Revoke a signing key: it signs nothing from now on",
			Auth: AuthTenant, MinRole: auth.Administrator, Response: typeOf[trust.SigningKey](), Status: 200, Handler: (*API).revokeSigningKey},

		{Method: "GET", Pattern: "/api/v1/platform/audit-events", OperationID: "listPlatformAuditEvents", Summary: "List the platform's audit log (tenants created, roots and OS packages uploaded), oldest first",
			Auth: AuthOperator, Response: typeOf[audit.Event](), List: true, Status: 200, Handler: (*API).listPlatformAudit},
		{Method: "GET", Pattern: "/api/v1/platform/online-key", OperationID: "getOnlineKey", Summary: "Show the server's online key, which the platform root names for snapshot and timestamp",
			Auth: AuthOperator, Response: typeOf[OnlineKey](), Status: 200, Handler: (*API).getOnlineKey},
		{Method: "PUT", Pattern: "/api/v1/platform/tuf/root", OperationID: "putPlatformRoot", Summary: "Upload the next platform root.json (signed offline by the platform root keys)",
			Auth: AuthOperator, RawRequest: true, MaxBodyBytes: store.MaxTUFFileBytes, Response: typeOf[TUFVersion](), Status: 200, Handler: (*API).putPlatformRoot},
		{Method: "POST", Pattern: "/api/v1/platform/blobs", OperationID: "uploadPlatformBlob", Summary: "Upload an OS image package (streamed, content-addressed) for tenants' targets.json to name",
			Auth: AuthOperator, RawRequest: true, RawRequestType: "application/octet-stream", MaxBodyBytes: MaxBlobBytes, Response: typeOf[BlobInfo](), Status: 201, Handler: (*API).uploadPlatformBlob},
		{Method: "GET", Pattern: tenantPath + "/tuf/delegation", OperationID: "getTenantDelegation", Summary: "Show what a tenant's next targets.json must delegate: its active registered signing keys",
			Auth: AuthOperator, Response: typeOf[Delegation](), Status: 200, Handler: (*API).getTenantDelegation},
		{Method: "PUT", Pattern: tenantPath + "/tuf/targets", OperationID: "putTenantTargets", Summary: "Upload a tenant's targets.json (signed offline by the platform OS key) and publish",
			Auth: AuthOperator, RawRequest: true, MaxBodyBytes: store.MaxTUFFileBytes, Response: typeOf[TUFVersion](), Status: 200, Handler: (*API).putTenantTargets},
		{Method: "PUT", Pattern: tenantPath + "/tuf/apps", OperationID: "putTenantApps", Summary: "Upload the tenant's apps.json (signed offline by an active registered signing key) and publish",
			Auth: AuthTenant, MinRole: auth.Contributor, RawRequest: true, MaxBodyBytes: store.MaxTUFFileBytes, Response: typeOf[TUFVersion](), Status: 200, Handler: (*API).putTenantApps},
		{Method: "POST", Pattern: tenantPath + "/blobs", OperationID: "uploadBlob", Summary: "Upload an image package (streamed, content-addressed by SHA-256) for the tenant's apps.json to name",
			Auth: AuthTenant, MinRole: auth.Contributor, RawRequest: true, RawRequestType: "application/octet-stream", MaxBodyBytes: MaxBlobBytes, Response: typeOf[BlobInfo](), Status: 201, Handler: (*API).uploadBlob},
		{Method: "GET", Pattern: tenantPath + "/storage", OperationID: "getTenantStorage", Summary: "Show what the tenant's uploaded image packages take against its storage quota",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[tenant.Storage](), Status: 200, Handler: (*API).getTenantStorage},
		{Method: "PUT", Pattern: tenantPath + "/storage-quota", OperationID: "putTenantStorageQuota", Summary: "Set a tenant's storage quota in bytes: uploads past it are refused (platform operators only)",
			Auth: AuthOperator, Request: typeOf[tenant.StorageQuota](), MaxBodyBytes: 1 << 10, Response: typeOf[tenant.Storage](), Status: 200, Handler: (*API).putTenantStorageQuota},
		{Method: "GET", Pattern: tenantPath + "/tuf/targets/{target...}", OperationID: "getTenantTarget", Summary: "Download a target of the tenant's TUF view by its hash-prefixed name (Range and a strong ETag supported)",
			Auth: AuthTenant, MinRole: auth.Reader, RawResponse: true, RawResponseType: "application/octet-stream", Status: 200, Handler: (*API).getTenantTarget},
		{Method: "GET", Pattern: tenantPath + "/tuf/metadata/{file}", OperationID: "getTenantTUFFile", Summary: "Fetch a file of the tenant's TUF repository view (N.root.json, N.targets.json, N.apps.json, N.snapshot.json, timestamp.json)",
			Auth: AuthTenant, MinRole: auth.Reader, RawResponse: true, Status: 200, Handler: (*API).getTenantTUFFile},

		{Method: "POST", Pattern: "/api/v1/platform/devices", OperationID: "registerDevice", Summary: "Register a manufactured device's identity public key (ECDSA P-256 PEM); its ID is the hex SHA-256 of the key",
			Auth: AuthOperator, Request: typeOf[device.Register](), Response: typeOf[device.Device](), Status: 201, Handler: (*API).registerDevice},
		{Method: "PUT", Pattern: "/api/v1/platform/ca-certificate", OperationID: "putPlatformCertificate", Summary: "Upload the platform root's X.509 certificate (self-signed by a root key of the TUF root) that certifies tenant device CAs",
			Auth: AuthOperator, RawRequest: true, RawRequestType: pem, MaxBodyBytes: MaxBodyBytes, Response: typeOf[PlatformCertificate](), Status: 200, Handler: (*API).putPlatformCertificate},
		{Method: "GET", Pattern: "/api/v1/platform/device-cas", OperationID: "listPendingDeviceCAs", Summary: "List every tenant's device CAs that wait for the platform root to certify them",
			Auth: AuthOperator, Response: typeOf[device.CA](), List: true, Status: 200, Handler: (*API).listPendingDeviceCAs},
		{Method: "PUT", Pattern: tenantPath + "/device-cas/{ca}/certificate", OperationID: "putDeviceCACertificate", Summary: "Upload the certificate the platform root issued (offline) for a pending tenant device CA; it becomes the tenant's active CA",
			Auth: AuthOperator, RawRequest: true, RawRequestType: pem, MaxBodyBytes: MaxBodyBytes, Response: typeOf[device.CA](), Status: 200, Handler: (*API).putDeviceCACertificate},

		{Method: "GET", Pattern: tenantPath + "/device-cas", OperationID: "listDeviceCAs", Summary: "List the tenant's device CAs (pending, active, retired)",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[device.CA](), List: true, Status: 200, Handler: (*API).listDeviceCAs},
		{Method: "POST", Pattern: tenantPath + "/device-cas", OperationID: "rotateDeviceCA", Summary: "Start a device CA rotation: a new CA that takes over, with an overlap, once the platform root certifies it",
			Auth: AuthTenant, MinRole: auth.Administrator, Response: typeOf[device.CA](), Status: 201, Handler: (*API).rotateDeviceCA},
		{Method: "GET", Pattern: tenantPath + "/ca-certificate-chain", OperationID: "getDeviceCAChain", Summary: "Download the PEM chain (the tenant's trusted device CAs, then the platform root) a tenant's cloud trusts its devices with",
			Auth: AuthTenant, MinRole: auth.Reader, RawResponse: true, RawResponseType: pem, Status: 200, Handler: (*API).getDeviceCAChain},

		{Method: "POST", Pattern: tenantPath + "/device-claims", OperationID: "claimDevices", Summary: "Claim registered devices into the tenant (once: a device claimed by another tenant cannot be claimed)",
			Auth: AuthTenant, MinRole: auth.Administrator, Request: typeOf[device.Claim](), Response: typeOf[Claimed](), Status: 200, Handler: (*API).claimDevices},
		{Method: "GET", Pattern: tenantPath + "/devices", OperationID: "listDevices", Summary: "List the tenant's devices",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[device.Device](), List: true, Filters: []string{"product", "group", "state"}, Status: 200, Handler: (*API).listDevices},
		{Method: "GET", Pattern: tenantPath + "/device-statuses", OperationID: "listDeviceStatuses", Summary: "List a product's devices with their fleet status: what each should run and why, what it runs, its state (never, refused, current, failed, pending), update state and last contact",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[fleet.DeviceStatus](), List: true, Filters: []string{"product", "group", "state"}, Status: 200, Handler: (*API).listDeviceStatuses},
		{Method: "GET", Pattern: tenantPath + "/fleet-status", OperationID: "getFleetStatus", Summary: "Show the fleet-status matrix of a product (product=NAME, optional group=NAME): per group, what its devices should run beside what they do run, with counts per state",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[fleet.FleetStatus](), Filters: []string{"product", "group"}, Status: 200, Handler: (*API).getFleetStatus},
		{Method: "GET", Pattern: devicePath, OperationID: "getDevice", Summary: "Show a device: group, floors, state and its last attestation (with the refusal reason)",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[device.Device](), Status: 200, Handler: (*API).getDevice},
		{Method: "PATCH", Pattern: devicePath, OperationID: "updateDevice", Summary: "Move a device to a group, block or unblock it, or grant the development capability (If-Match required; blocked and development need Administrator)",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[device.Update](), Response: typeOf[device.Device](), Status: 200, IfMatch: "required", Handler: (*API).updateDevice},
		{Method: "GET", Pattern: devicePath + "/certificates", OperationID: "listDeviceCertificates", Summary: "List the certificates issued to a device, newest first, with what it attested",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[device.Certificate](), List: true, Status: 200, Handler: (*API).listDeviceCertificates},
		{Method: "GET", Pattern: devicePath + "/error-reports", OperationID: "listErrorReports", Summary: "List a device's error reports, newest received first",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[errreport.Record](), List: true, Status: 200, Handler: (*API).listErrorReports},
		{Method: "GET", Pattern: devicePath + "/update-states", OperationID: "listUpdateStates", Summary: "List a device's update history (assigned, downloading, installed, committed, rolled back, failed, deferred), newest first by the device's time",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[updstate.Record](), List: true, Status: 200, Handler: (*API).listUpdateStates},
		{Method: "GET", Pattern: tenantPath + "/error-reports", OperationID: "listTenantErrorReports", Summary: "List the tenant's error reports, newest received first, filtered by product, group, device, kind, image and time received",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[store.TenantReport](), List: true, Filters: insight.FilterParams, Status: 200, Handler: (*API).listTenantErrorReports},
		{Method: "GET", Pattern: tenantPath + "/error-reports/export", OperationID: "exportErrorReports", Summary: "Download the tenant's error reports, one row per report, as CSV (format=csv, the default) or a JSON array (format=json), streamed, with the list's filters",
			Auth: AuthTenant, MinRole: auth.Reader, RawResponse: true, RawResponseType: "text/csv", Filters: append([]string{"format"}, insight.FilterParams...), Status: 200, Handler: (*API).exportErrorReports},
		{Method: "GET", Pattern: tenantPath + "/image-health", OperationID: "getImageHealth", Summary: "Show the health of each OS and app image version over a window (window=168h by default): devices running it, crash-free devices, crashes per device-hour",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[insight.HealthReport](), Filters: []string{"product", "window"}, Status: 200, Handler: (*API).getImageHealth},
		{Method: "GET", Pattern: tenantPath + "/error-issues", OperationID: "listErrorIssues", Summary: "List the tenant's error issues (reports grouped by signature), most recently seen first or (sort=reports) most reported; filters: product (name: its apps' issues), kind, since (RFC 3339)",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[errreport.Issue](), List: true, Filters: []string{"product", "kind", "since", "sort"}, Status: 200, Handler: (*API).listErrorIssues},
		{Method: "GET", Pattern: tenantPath + "/error-issues/{issue}", OperationID: "getErrorIssue", Summary: "Show an error issue with the image versions its reports named and its reports per day over the last 30 days",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[errreport.IssueDetail](), Status: 200, Handler: (*API).getErrorIssue},
		{Method: "GET", Pattern: tenantPath + "/error-issues/{issue}/reports", OperationID: "listErrorIssueReports", Summary: "List an error issue's reports, newest received first",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[errreport.Record](), List: true, Status: 200, Handler: (*API).listErrorIssueReports},
		{Method: "GET", Pattern: groupPath + "/deployments", OperationID: "listDeployments", Summary: "List a device group's deployments, newest (current) first",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[device.Deployment](), List: true, Status: 200, Handler: (*API).listDeployments},
		{Method: "POST", Pattern: groupPath + "/deployments", OperationID: "createDeployment", Summary: "Deploy an app image (a current target of the tenant's apps.json, for the group's product) to a device group",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[device.DeploymentCreate](), Response: typeOf[device.Deployment](), Status: 201, Handler: (*API).createDeployment},
		{Method: "GET", Pattern: groupPath + "/deployments/{deployment}", OperationID: "getDeployment", Summary: "Get one of a device group's deployments",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[device.Deployment](), Status: 200, Handler: (*API).getDeployment},
		{Method: "GET", Pattern: groupPath + "/deployments/{deployment}/status", OperationID: "getDeploymentStatus", Summary: "Show a staged deployment's rollout now: per stage the devices targeted, on the new version, failed and crashing, and the gate's figures and verdict",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[rollout.Status](), Status: 200, Handler: (*API).getDeploymentStatus},
		{Method: "POST", Pattern: groupPath + "/deployments/{deployment}/pause", OperationID: "pauseDeployment", Summary: "Pause the group's current staged deployment: nothing new is assigned until it is resumed",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[device.RolloutAction](), Response: typeOf[device.Deployment](), Status: 200, Handler: (*API).pauseDeployment},
		{Method: "POST", Pattern: groupPath + "/deployments/{deployment}/resume", OperationID: "resumeDeployment", Summary: "Resume the group's current paused staged deployment; the open stage soaks again from now",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[device.RolloutAction](), Response: typeOf[device.Deployment](), Status: 200, Handler: (*API).resumeDeployment},
		{Method: "POST", Pattern: groupPath + "/deployments/{deployment}/abort", OperationID: "abortDeployment", Summary: "Stop a staged deployment for good; devices outside its open stages stay on the base image",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[device.RolloutAction](), Response: typeOf[device.Deployment](), Status: 200, Handler: (*API).abortDeployment},
		{Method: "POST", Pattern: groupPath + "/deployments/{deployment}/promote", OperationID: "promoteDeployment", Summary: "Open the next stage of the group's current staged deployment now, skipping the soak but not the gate's thresholds (force skips the gate too; audited as deployment.promote_forced)",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[device.RolloutAction](), Response: typeOf[device.Deployment](), Status: 200, Handler: (*API).promoteDeployment},
		{Method: "POST", Pattern: groupPath + "/deployments/rollback", OperationID: "rollbackDeployment", Summary: "Deploy an earlier deployment's target again (default: the one before the current one); the new deployment names the one it reverts",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[device.DeploymentRollback](), Response: typeOf[device.Deployment](), Status: 201, Handler: (*API).rollbackDeployment},

		{Method: "POST", Pattern: "/api/v1/device/attestation/nonces", OperationID: "createAttestationNonce", Summary: "Device: get a single-use attestation nonce",
			Auth: AuthDeviceProof, Request: typeOf[NonceRequest](), Response: typeOf[fleet.Nonce](), Status: 201, Handler: (*API).createNonce},
		{Method: "POST", Pattern: "/api/v1/device/attestations", OperationID: "attest", Summary: "Device: present signed attestation evidence; get a short-lived client certificate, or 403 refused",
			Auth: AuthDeviceProof, RawRequest: true, MaxBodyBytes: fleet.MaxEvidenceBytes, Response: typeOf[fleet.Issued](), Status: 201, Handler: (*API).attest},
		{Method: "GET", Pattern: "/api/v1/device/me", OperationID: "getDeviceSelf", Summary: "Device (mutual TLS): what the security service holds about the calling device",
			Auth: AuthDevice, Response: typeOf[device.Device](), Status: 200, Handler: (*API).getDeviceSelf},
		{Method: "GET", Pattern: "/api/v1/device/assignment", OperationID: "getAssignment", Summary: "Device (mutual TLS): the update assignment signed by the director key, with a strong ETag; 304 when If-None-Match names the one the device holds and it is still current",
			Auth: AuthDevice, Recovery: true, RawResponse: true, Status: 200, Handler: (*API).getAssignment},
		{Method: "POST", Pattern: "/api/v1/device/updates", OperationID: "waitForUpdates", Summary: "Device (mutual TLS): long-poll for a change of what it should run; answers at once when the generation differs from since, else within 50 s",
			Auth: AuthDevice, Request: typeOf[fleet.UpdatesWait](), Response: typeOf[fleet.Updates](), Status: 200, Handler: (*API).waitForUpdates},
		{Method: "GET", Pattern: "/api/v1/device/capabilities/development", OperationID: "getDevelopmentCapability", Summary: "Device (mutual TLS): its development capability, signed by the director key and bound to it (404 when not granted)",
			Auth: AuthDevice, RawResponse: true, Status: 200, Handler: (*API).getDevelopmentCapability},
		{Method: "POST", Pattern: "/api/v1/device/error-reports", OperationID: "createErrorReports", Summary: "Device (mutual TLS): upload up to 100 error reports of the calling device; answers the IDs now stored (each once, however often sent); an invalid report refuses the whole batch",
			Auth: AuthDevice, Request: typeOf[errreport.Batch](), MaxBodyBytes: errreport.MaxBatchBytes, Response: typeOf[errreport.Accepted](), Status: 200, Handler: (*API).createErrorReports},
		{Method: "POST", Pattern: "/api/v1/device/update-states", OperationID: "createUpdateStates", Summary: "Device (mutual TLS): upload up to 100 update states of the calling device; answers the IDs now stored (each once, however often sent); an invalid report refuses the whole batch",
			Auth: AuthDevice, Request: typeOf[updstate.Batch](), MaxBodyBytes: updstate.MaxBatchBytes, Response: typeOf[updstate.Accepted](), Status: 200, Handler: (*API).createUpdateStates},
		{Method: "GET", Pattern: "/api/v1/device/tuf/metadata/{file}", OperationID: "getDeviceTUFFile", Summary: "Device (mutual TLS): a file of its tenant's TUF repository view",
			Auth: AuthDevice, Recovery: true, RawResponse: true, Status: 200, Handler: (*API).getTenantTUFFile},
		{Method: "GET", Pattern: "/api/v1/device/tuf/targets/{target...}", OperationID: "getDeviceTarget", Summary: "Device (mutual TLS): download a target of its tenant's view by hash-prefixed name (Range and a strong ETag supported)",
			Auth: AuthDevice, Recovery: true, RawResponse: true, RawResponseType: "application/octet-stream", Status: 200, Handler: (*API).getTenantTarget},

		{Method: "GET", Pattern: tenantPath + "/products", OperationID: "listProducts", Summary: "List the tenant's products",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[product.Product](), List: true, Filters: []string{"name"}, Status: 200, Handler: (*API).listProducts},
		{Method: "POST", Pattern: tenantPath + "/products", OperationID: "createProduct", Summary: "Create a product with its five default device groups",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[product.Create](), Response: typeOf[product.Product](), Status: 201, Handler: (*API).createProduct},
		{Method: "GET", Pattern: productPath, OperationID: "getProduct", Summary: "Show a product",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[product.Product](), Status: 200, Handler: (*API).getProduct},
		{Method: "PATCH", Pattern: productPath, OperationID: "updateProduct", Summary: "Change a product's name or description (If-Match required)",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[product.Update](), Response: typeOf[product.Product](), Status: 200, IfMatch: "required", Handler: (*API).updateProduct},
		{Method: "DELETE", Pattern: productPath, OperationID: "deleteProduct", Summary: "Delete a product and its device groups",
			Auth: AuthTenant, MinRole: auth.Contributor, Status: 204, IfMatch: "optional", Handler: (*API).deleteProduct},

		{Method: "GET", Pattern: productPath + "/device-groups", OperationID: "listDeviceGroups", Summary: "List a product's device groups",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[product.Group](), List: true, Filters: []string{"name"}, Status: 200, Handler: (*API).listGroups},
		{Method: "POST", Pattern: productPath + "/device-groups", OperationID: "createDeviceGroup", Summary: "Create a device group in a product",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[product.GroupCreate](), Response: typeOf[product.Group](), Status: 201, Handler: (*API).createGroup},
		{Method: "GET", Pattern: groupPath, OperationID: "getDeviceGroup", Summary: "Show a device group",
			Auth: AuthTenant, MinRole: auth.Reader, Response: typeOf[product.Group](), Status: 200, Handler: (*API).getGroup},
		{Method: "PATCH", Pattern: groupPath, OperationID: "updateDeviceGroup", Summary: "Change a device group (If-Match required)",
			Auth: AuthTenant, MinRole: auth.Contributor, Request: typeOf[product.GroupUpdate](), Response: typeOf[product.Group](), Status: 200, IfMatch: "required", Handler: (*API).updateGroup},
		{Method: "DELETE", Pattern: groupPath, OperationID: "deleteDeviceGroup", Summary: "Delete a device group",
			Auth: AuthTenant, MinRole: auth.Contributor, Status: 204, IfMatch: "optional", Handler: (*API).deleteGroup},
	}
}
