// Package demo is the composition root of `moat demo`: the seed scenario on one machine
// with embedded defaults. It starts a security service (internal/server) on SQLite in a
// fresh data directory, on the given management and device addresses or, where one is in
// use, on a free port. Then, through the public client package only (as any tenant's
// tooling would), it plays the story: the platform operator bootstraps and creates tenant
// Contoso with its own administrator, who creates product DW100 with its default device
// groups; Contoso makes its offline signing key (registering only the public half) and
// packs the DW100 app; the platform operator makes the offline root and OS keys, publishes
// the TUF root, the OS image and the delegation of apps to Contoso; Contoso signs its
// apps.json. A fleet of in-process agents (internal/agent) on the device listener then
// attests, installs the OS and app, rolls back a crashing app 2.0.0 on the field-test
// device, and one device with a tampered app is refused with its reason on record. The
// demo reports each step and what a user can try next. Two stories play after it: the
// owners' (owners.go), then the rollout story (rollout.go), in which sixteen more DW100s
// join DW100/Production and staged rollouts across its 19 running devices advance, and one
// is stopped by its health gate and rolled back.
//
// It holds the offline keys a real tenant and platform keep away from the server: a demo
// only. A Demo is driven by one goroutine: Start, then Serve (or Close).
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/examples/repairshop"
	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/cloud"
	"github.com/moat-iot/moat/internal/cloud/mailbox"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/localtls"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/tuf"
)

// Config is what the demo is built from.
type Config struct {
	// Addr is the demo server's management listener and DeviceAddr its device listener;
	// when one is taken the demo takes a free port for it instead.
	Addr       string
	DeviceAddr string
	// DataDir holds the demo's state.
	DataDir string
	// TripSoak is the soak of the crashing 3.0.0's rollout in the rollout story: how long
	// its first stage runs before the gate judges it; 0 means DefaultTripSoak. The devices
	// of that stage must install, commit and crash within it (a second or two on a
	// workstation); the demo's tests, whose app is a race-detector binary slow to start on
	// a loaded machine, lengthen it.
	TripSoak time.Duration
}

// DefaultTripSoak is Config.TripSoak's default.
const DefaultTripSoak = 20 * time.Second

// Result is what the demo made, for the caller to print or use.
type Result struct {
	// URL is the management API (people, the CLI); DeviceURL the device API (agents).
	URL           string
	DeviceURL     string
	CAFile        string
	OperatorToken string
	Tenant        client.Tenant
	AdminToken    string
	Product       client.Product
	Groups        []client.DeviceGroup
	// SigningKey is Contoso's registered offline key; KeyFile holds its private half,
	// which never left the demo's machine.
	SigningKey client.SigningKey
	KeyFile    string
	// AppImage is the packed DW100 application image and AppManifest its manifest.
	AppImage    string
	AppSHA256   string
	AppManifest image.Manifest
	// TrustAnchor is the platform's 1.root.json, which devices pin; AppsVersion the version
	// of Contoso's apps.json that lists the DW100 app.
	TrustAnchor string
	AppsVersion int64
	// OSPath and OSSHA256 name the platform's OS image on both feeds.
	OSPath   string
	OSSHA256 string
	// CAChain is the PEM chain Contoso's cloud trusts its devices with.
	CAChain string
	// CloudURL is Contoso's manufacturer cloud's API, CloudMQTT its devices' MQTT address,
	// CloudCAFile the CA its TLS certificate chains to.
	CloudURL, CloudMQTT, CloudCAFile string
	// ShopURL is Contoso's repair shop (the reference shop of examples/repairshop).
	ShopURL string
	// Owners are the owners who claimed the first two dishwashers in the owners' portal.
	Owners []DemoOwner
	// Devices is the demo fleet: what each device attested and installed; the last one
	// is the device with a tampered app.
	Devices []DeviceResult
	// FieldDevice is the field-test device that rolled back the crashing app 2.0.0.
	FieldDevice string
	// CloudDevices are the devices connected to Contoso's cloud: the first four.
	CloudDevices []string
	// RolloutFleet are the further DW100s of DW100/Production whose agents start with the
	// rollout story (not in Devices).
	RolloutFleet []string
}

// DeviceResult is one demo device's story.
type DeviceResult struct {
	ID string
	// Serial and NotAfter describe its certificate; empty when attestation was refused.
	Serial   string
	NotAfter time.Time
	// Refusal and Detail are the reason support staff see when it was refused.
	Refusal, Detail string
	// Installed lists the images it downloaded, verified and committed.
	Installed []string
}

// Demo is a running demo.
type Demo struct {
	srv    *server.Server
	dir    string
	played chan struct{}
	// storyDone receives the owners' story's outcome (story) once it has played; it plays
	// after the scenario, so --exit-after does not wait for it.
	storyDone chan StoryResult
	// Contoso's offline signing state for apps.json (the demo plays Contoso's engineers).
	apps      map[string]tuf.TargetFile
	appSigner signature.Signer
	expires   time.Time
	osImage   []byte // the OS image package the fleet booted
	exe       string // this binary: the demo's DW100 app images launch it as the app
	agents    []*agent.Agent
	running   []*demoDevice // every device but the tampered one, once the scenario played
	extra     []*demoDevice // the rollout fleet, whose agents the rollout story starts
	v11       string        // app 1.1.0's target, which the fleet runs after the scenario
	tripSoak  time.Duration // Config.TripSoak
	// rolloutDone receives the rollout story's outcome; it plays after the owners' story.
	rolloutDone chan RolloutResult
	agentsWG    sync.WaitGroup
	agentLog    *slog.Logger
	fleetLog    *slog.Logger // the agents' log (newFleetLog), made by the first startAgents
	log         *slog.Logger
	cloud       *cloud.Cloud // Contoso's manufacturer cloud
	mail        *mailbox.Mailbox
	shop        *repairshop.Server
	cloudWG     sync.WaitGroup
	// Result is complete once Played is closed.
	Result Result
}

// Played is closed when the scenario has been played and Result is complete.
func (d *Demo) Played() <-chan struct{} { return d.played }

// StoryDone delivers the outcome of the owners' story, which unfolds after the scenario
// has played (about a minute, as the simulated heater fails and the cloud acts): what the
// cloud did, or why the story did not finish.
func (d *Demo) StoryDone() <-chan StoryResult { return d.storyDone }

// StoryResult is what the owners' story came to.
type StoryResult struct {
	// HeaterAlert and RinseAlert are the cloud's alerts of the story; HeaterDiagnostic the
	// self-test the heater alert ran; Reservation the shop's reference for the heater.
	HeaterAlert, RinseAlert, Reservation string
	HeaterDiagnostic                     client.Diagnostic
	Err                                  error
}

// Start starts the server and plays the scenario. The caller runs Serve.
func Start(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) (*Demo, error) {
	scfg := server.DefaultConfig()
	scfg.Addr, scfg.DeviceAddr = cfg.Addr, cfg.DeviceAddr
	if scfg.DeviceAddr == "" {
		scfg.DeviceAddr = server.DefaultConfig().DeviceAddr
	}
	scfg.DataDir = cfg.DataDir
	scfg.RolloutAdvanceInterval = RolloutAdvanceInterval // a stage opens within a second of its soak
	srv, err := openOnFreePorts(ctx, scfg, log, out)
	if err != nil {
		return nil, err
	}
	if cfg.TripSoak < 0 || cfg.TripSoak > time.Hour {
		return nil, errors.Join(fmt.Errorf("trip soak %s: want 0 (the default, %s) to 1h", cfg.TripSoak, DefaultTripSoak), srv.Close())
	}
	if srv.BootstrapToken == "" {
		return nil, errors.Join(fmt.Errorf("data directory %s already has a platform operator; the demo needs a fresh one", cfg.DataDir), srv.Close())
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	tripSoak := cfg.TripSoak
	if tripSoak == 0 {
		tripSoak = DefaultTripSoak
	}
	return &Demo{srv: srv, dir: cfg.DataDir, tripSoak: tripSoak, played: make(chan struct{}), storyDone: make(chan StoryResult, 1), rolloutDone: make(chan RolloutResult, 1), exe: exe, agentLog: log.With("component", "agent"), log: log, Result: Result{
		URL: srv.URL, DeviceURL: srv.DeviceURL, CAFile: filepath.Join(cfg.DataDir, "tls", "ca.pem"), OperatorToken: srv.BootstrapToken,
	}}, nil
}

// openOnFreePorts opens the server, moving each listener whose address is in use to a free
// port on the same host. server.Open binds before it touches the data directory, so a
// retry starts from the same fresh state (defect 1; attacked by TestDemo_BusyPorts).
func openOnFreePorts(ctx context.Context, cfg server.Config, log *slog.Logger, out io.Writer) (*server.Server, error) {
	for {
		srv, err := server.Open(ctx, cfg, log)
		le, ok := errors.AsType[*server.ListenError](err)
		if !ok || !errors.Is(err, syscall.EADDRINUSE) {
			return srv, err
		}
		host, port, _ := net.SplitHostPort(le.Addr)
		if port == "0" {
			return nil, err // a free port was asked for and none was given: do not loop
		}
		fmt.Fprintf(out, "%s is in use; the demo takes a free port instead.\n", le.Addr)
		switch le.Flag {
		case "addr":
			cfg.Addr = net.JoinHostPort(host, "0")
		case "device-addr":
			cfg.DeviceAddr = net.JoinHostPort(host, "0")
		default:
			return nil, err
		}
	}
}

// Close releases a demo that was started but will not Serve.
func (d *Demo) Close() error { return d.srv.Close() }

// Serve runs the server until ctx is done, playing the scenario once it answers. The
// scenario's result is reported on out; a scenario failure stops the server and is returned.
func (d *Demo) Serve(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- d.srv.Serve(ctx) }()
	if err := d.play(ctx, out); err != nil {
		cancel(err)
		d.agentsWG.Wait()
		d.cloudWG.Wait()
		return errors.Join(fmt.Errorf("demo scenario: %w", err), <-done)
	}
	close(d.played)
	var story sync.WaitGroup
	defer story.Wait() // ended with ctx
	story.Go(func() {
		res := d.story(ctx, out, func(format string, args ...any) { fmt.Fprintf(out, "  - "+format+"\n", args...) })
		err := res.Err
		if err != nil && ctx.Err() == nil {
			fmt.Fprintf(out, "\nThe owners' story did not finish: %v\n", err)
		} else if err == nil {
			fmt.Fprintln(out, "\nThe owners' story has played.")
		}
		d.storyDone <- res
		if ctx.Err() != nil {
			d.rolloutDone <- RolloutResult{Err: ctx.Err()}
			return
		}
		// After the owners' story, so that updates do not restart the apps whose
		// telemetry and diagnostics that story watches.
		rres := d.rolloutStory(ctx, out, func(format string, args ...any) { fmt.Fprintf(out, "  - "+format+"\n", args...) })
		if rres.Err != nil && ctx.Err() == nil {
			fmt.Fprintf(out, "\nThe rollout story did not finish: %v\n", rres.Err)
		} else if rres.Err == nil {
			fmt.Fprintln(out, "\nThe rollout story has played; the demo runs until Ctrl-C.")
		}
		d.rolloutDone <- rres
	})
	err := <-done
	d.agentsWG.Wait()
	d.cloudWG.Wait()
	return err
}

func (d *Demo) play(ctx context.Context, out io.Writer) error {
	op, err := client.New(d.Result.URL, client.WithToken(d.Result.OperatorToken), client.WithCACertPEM(d.srv.CAPEM))
	if err != nil {
		return err
	}
	step := func(format string, args ...any) { fmt.Fprintf(out, "  - "+format+"\n", args...) }
	fmt.Fprintf(out, "\nmoat demo: security service at %s (device API at %s)\n\n", d.Result.URL, d.Result.DeviceURL)

	me, err := op.GetMe(ctx)
	if err != nil {
		return fmt.Errorf("platform operator: %w", err)
	}
	step("platform operator %q (%s) bootstrapped", me.User.Name, me.User.ID)

	t, err := op.CreateTenant(ctx, client.TenantCreate{Name: "Contoso"})
	if err != nil {
		return fmt.Errorf("create tenant Contoso: %w", err)
	}
	d.Result.Tenant = t
	step("tenant %s (%s) created", t.Name, t.ID)

	admin, err := op.CreateMember(ctx, t.ID, client.MemberCreate{Name: "contoso-admin", Role: client.RoleAdministrator})
	if err != nil {
		return fmt.Errorf("create Contoso administrator: %w", err)
	}
	d.Result.AdminToken = admin.Secret
	step("user %s (%s) is Contoso's Administrator", admin.Member.User.Name, admin.Member.User.ID)

	// From here on Contoso acts for itself; the platform operator steps back.
	contoso, err := client.New(d.Result.URL, client.WithToken(admin.Secret), client.WithCACertPEM(d.srv.CAPEM))
	if err != nil {
		return err
	}
	if err := contoso.DeleteMember(ctx, t.ID, me.User.ID); err != nil {
		return fmt.Errorf("platform operator leaves Contoso: %w", err)
	}
	step("the platform operator left tenant Contoso (it sees none of Contoso's data)")

	p, err := contoso.CreateProduct(ctx, t.ID, client.ProductCreate{Name: "DW100", Description: "Contoso DW100 connected dishwasher"})
	if err != nil {
		return fmt.Errorf("create product DW100: %w", err)
	}
	d.Result.Product = p
	step("product %s (%s) created with its default device groups:", p.Name, p.ID)
	groups, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.DeviceGroup], error) {
		return contoso.ListDeviceGroups(ctx, t.ID, p.ID, o)
	})
	if err != nil {
		return fmt.Errorf("list DW100 device groups: %w", err)
	}
	d.Result.Groups = groups
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "      GROUP\tOS FEED\tUPDATE POLICY\tID")
	for _, g := range groups {
		fmt.Fprintf(tw, "      %s\t%s\t%s\t%s\n", g.Name, g.OSFeed, g.UpdatePolicy, g.ID)
	}
	tw.Flush()

	if err := d.offline(ctx, contoso, out, step); err != nil {
		return err
	}
	if err := d.publish(ctx, op, contoso, out, step); err != nil {
		return err
	}
	if err := d.fleet(ctx, op, contoso, out, step); err != nil {
		return err
	}
	// A one-time link, never a token, in a URL: it works once, within minutes.
	link, err := contoso.CreateSignInLink(ctx)
	if err != nil {
		return fmt.Errorf("console sign-in link: %w", err)
	}
	fmt.Fprintf(out, `
Web console:         %s/ui/
Console sign-in:     %s
                     (Contoso's admin; works once, until %s; then paste the token or run moat console link)
`, d.Result.URL, contoso.SignInLinkURL(link), link.ExpiresAt.Local().Format("15:04:05"))
	fmt.Fprintf(out, `
Server:              %s
Device API:          %s (mutual TLS; agents' --server)
TLS CA:              %s (SHA-256 %s)
Platform operator:   %s
Contoso admin token: %s
OpenAPI document:    %s/api/v1/openapi.json
Contoso's cloud:     %s (its API; MQTT for devices at mqtts://%s)
Cloud TLS CA:        %s
Owners' portal:      %s/portal/ (sign in as %s, password %s; or %s, password %s)
Support view:        %s/support/ (paste Contoso's admin token)
Repair shop:         %s (the reference shop of examples/repairshop)

Try it from another terminal:
  moat login --server %s --ca-cert %s --token %s
  moat product list
  moat device-group list --product DW100
  moat image list
  moat device list
  moat device show %s
  moat cloud telemetry %s --since 10m --cloud %s --cloud-ca %s
  moat cloud diagnostics run %s --command heater-self-test --wait --cloud %s --cloud-ca %s
  moat cloud service-requests list --cloud %s --cloud-ca %s
  moat cloud reservations list --cloud %s --cloud-ca %s

The demo runs until Ctrl-C. The owners' story follows below as it happens (about a minute:
a heater fails, rinse agent runs low, and the cloud acts), then the rollout story (about a
minute: app 1.2.0 rolls out across DW100/Production in stages, and a crashing 3.0.0 is
stopped by the health gate in its first stage and rolled back):

`, d.Result.URL, d.Result.DeviceURL, d.Result.CAFile, localtls.Fingerprint(d.srv.CAPEM), d.Result.OperatorToken, d.Result.AdminToken,
		d.Result.URL, d.Result.CloudURL, d.Result.CloudMQTT, d.Result.CloudCAFile,
		d.Result.CloudURL, d.Result.Owners[0].Email, d.Result.Owners[0].Password, d.Result.Owners[1].Email, d.Result.Owners[1].Password,
		d.Result.CloudURL, d.Result.ShopURL,
		d.Result.URL, d.Result.CAFile, d.Result.AdminToken, d.Result.Devices[len(d.Result.Devices)-1].ID,
		d.Result.Devices[0].ID, d.Result.CloudURL, d.Result.CloudCAFile, d.Result.Devices[0].ID, d.Result.CloudURL, d.Result.CloudCAFile,
		d.Result.CloudURL, d.Result.CloudCAFile, d.Result.CloudURL, d.Result.CloudCAFile)
	return nil
}
