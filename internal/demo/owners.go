package demo

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/examples/repairshop"
	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/cloud"
	"github.com/moat-iot/moat/internal/cloud/mailbox"
	"github.com/moat-iot/moat/internal/localtls"
)

// The owners' side of the seed story (issue 14): Contoso sells two DW100s, their owners
// claim them in the owners' portal, one machine's heater begins to fail and the other runs
// low on rinse agent; the cloud notices, runs diagnostics, mails the owners, opens a
// service request and reserves the heater at the owner's repair shop.

// Demo owners, their passwords printed so that the reader can sign in to the portal.
const (
	demoShopID   = "contoso-repair-seattle"
	demoShopName = "Contoso Repair Seattle"
	demoHeater   = "DW100-HTR-2"
	demoMailFrom = "dw100@contoso.example"
)

// DemoOwner is an owner the demo signs up, with the appliance they claim.
type DemoOwner struct {
	Name, Email, Password string
	Device                string
	// SoldAt is the appliance's purchase date: the first is under the DW100's two-year
	// warranty, the second is not.
	SoldAt time.Time
}

// mailAndShop starts the demo's mail server (the cloud's SMTP server, with STARTTLS, that
// keeps the mail to print it) and Contoso's repair shop (the reference shop of
// examples/repairshop, with two heaters in stock), and points cfg at them.
func (d *Demo) mailAndShop(ctx context.Context, cfg *cloud.Config, dir string, log *slog.Logger) error {
	cert, _, err := localtls.Load(filepath.Join(dir, "mail"), "moat demo mail", []string{"127.0.0.1", "localhost"}, time.Now())
	if err != nil {
		return err
	}
	mb, err := mailbox.Start(ctx, mailbox.Config{Addr: "127.0.0.1:0", RequireTLS: true, Logger: log.With("part", "mail"),
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}})
	if err != nil {
		return fmt.Errorf("mail server: %w", err)
	}
	d.mail = mb
	context.AfterFunc(ctx, func() { _ = mb.Close() })
	cfg.SMTPAddr, cfg.SMTPFrom, cfg.SMTPCA = mb.Addr(), demoMailFrom, filepath.Join(dir, "mail", "ca.pem")

	var tok [24]byte
	_, _ = rand.Read(tok[:]) // crypto/rand.Read never fails (Go 1.24+)
	token := base64.RawURLEncoding.EncodeToString(tok[:])
	sc := repairshop.DefaultConfig()
	sc.Stock, sc.Token, sc.Now, sc.Logger = map[string]int{demoHeater: 2}, token, time.Now, log.With("part", "repair-shop")
	shop, err := repairshop.New(sc)
	if err != nil {
		return err
	}
	d.shop = shop
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := shop.HTTPServer(ln.Addr().String())
	go func() { _ = hs.Serve(ln) }()
	context.AfterFunc(ctx, func() { _ = hs.Close() })
	d.Result.ShopURL = "http://" + ln.Addr().String()
	if err := os.WriteFile(filepath.Join(dir, "shop.token"), []byte(token+"\n"), 0o600); err != nil {
		return err
	}
	shops := fmt.Sprintf("version: 1\nshops:\n  %s:\n    name: %s\n    url: %s\n    token_file: shop.token\n", demoShopID, demoShopName, d.Result.ShopURL)
	cfg.Shops = filepath.Join(dir, "shops.yaml")
	return os.WriteFile(cfg.Shops, []byte(shops), 0o600)
}

// sellAndClaim makes claim codes for the first two dishwashers at manufacture, records
// their sales at Contoso Repair Seattle, and has their owners sign up in the portal,
// follow the mailed link and claim them with their codes: through the portal's pages, as
// a browser would.
func (d *Demo) sellAndClaim(ctx context.Context, fleet []*demoDevice, step func(string, ...any)) error {
	cc, err := d.cloudClient()
	if err != nil {
		return err
	}
	now := time.Now()
	d.Result.Owners = []DemoOwner{
		{Name: "Alice Owner", Email: "alice@example.com", Password: "dishes-" + randomWord(), Device: string(fleet[0].key.ID()), SoldAt: now.AddDate(0, -8, 0)},
		{Name: "Bob Owner", Email: "bob@example.com", Password: "dishes-" + randomWord(), Device: string(fleet[1].key.ID()), SoldAt: now.AddDate(-3, 0, 0)},
	}
	ids := []string{d.Result.Owners[0].Device, d.Result.Owners[1].Device}
	codes, err := cc.CreateClaimCodes(ctx, client.ClaimCodesCreate{Product: d.Result.Product.Name, Devices: ids})
	if err != nil {
		return fmt.Errorf("claim codes: %w", err)
	}
	code := map[string]string{}
	for _, c := range codes.Items {
		code[c.Device] = c.Code
	}
	for _, o := range d.Result.Owners {
		if _, err := cc.RecordSale(ctx, client.SaleRecord{Device: o.Device, Product: d.Result.Product.Name, SoldAt: o.SoldAt.Format(time.DateOnly), Shop: demoShopID}); err != nil {
			return fmt.Errorf("record sale: %w", err)
		}
	}
	step("Contoso printed a claim code on each dishwasher at manufacture (the cloud keeps only their hashes) and recorded two sales at %s: %s... on %s (under the DW100's 2-year warranty), %s... on %s (out of warranty)",
		demoShopName, ids[0][:16], d.Result.Owners[0].SoldAt.Format(time.DateOnly), ids[1][:16], d.Result.Owners[1].SoldAt.Format(time.DateOnly))
	for _, o := range d.Result.Owners {
		if err := d.ownerJoins(ctx, o, code[o.Device]); err != nil {
			return fmt.Errorf("owner %s: %w", o.Email, err)
		}
		step("%s signed up in the owners' portal, followed the link mailed to %s and claimed %s... with its code %s", o.Name, o.Email, o.Device[:16], code[o.Device])
	}
	return nil
}

// failAndRunLow makes the first dishwasher's heater fail and the second run low on rinse
// agent.
func (d *Demo) failAndRunLow(fleet []*demoDevice, step func(string, ...any)) {
	fleet[0].dw.SetHeaterFault(periph.HeaterDead)
	fleet[1].dw.SetRinseAgent(8)
	step("the heater of %s... (Alice's) begins to fail, and %s... (Bob's) runs low on rinse agent (8 %%)", string(fleet[0].key.ID())[:16], string(fleet[1].key.ID())[:16])
}

// story waits for the cloud to do what the seed says and prints it.
func (d *Demo) story(ctx context.Context, out io.Writer, step func(string, ...any)) (res StoryResult) {
	res.Err = d.playStory(ctx, out, step, &res)
	return res
}

func (d *Demo) playStory(ctx context.Context, out io.Writer, step func(string, ...any), res *StoryResult) error {
	cc, err := d.cloudClient()
	if err != nil {
		return err
	}
	alice, bob := d.Result.Owners[0], d.Result.Owners[1]
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()

	low, err := waitFor(ctx, func() (*client.Alert, error) { return openAlert(ctx, cc, bob.Device, "rinse-agent-low") })
	if err != nil {
		return fmt.Errorf("rinse-agent alert: %w", err)
	}
	prompt, err := d.waitMail(ctx, bob.Email, "rinse agent")
	if err != nil {
		return err
	}
	step("the cloud saw Bob's rinse agent at %s (alert %s, rule rinse-agent-low) and prompted him to buy more, in the portal and by mail:", formatValue(low.Value, "%"), low.ID)
	printMail(out, prompt)

	heat, err := waitFor(ctx, func() (*client.Alert, error) {
		a, err := openAlert(ctx, cc, alice.Device, "heater-drying-anomaly")
		if a == nil || err != nil {
			return nil, err
		}
		full, err := cc.GetAlert(ctx, a.ID) // with its diagnostics
		if err != nil || len(full.Diagnostics) == 0 || full.Diagnostics[len(full.Diagnostics)-1].FinishedAt == nil {
			return nil, err // its diagnostics still run
		}
		return &full, nil
	})
	if err != nil {
		return fmt.Errorf("heater alert: %w", err)
	}
	step("the cloud found Alice's drying temperature unusual against the DW100 fleet (alert %s): %s", heat.ID, heat.Message)
	dg := heat.Diagnostics[len(heat.Diagnostics)-1]
	step("it ran the %s diagnostic on the dishwasher remotely: %s, %s", dg.Command, dg.State, strings.TrimSpace(string(dg.Result)+dg.Error))
	res.HeaterDiagnostic = dg
	notice, err := d.waitMail(ctx, alice.Email, "needs attention")
	if err != nil {
		return err
	}
	step("Alice was notified:")
	printMail(out, notice)
	rsv, err := waitFor(ctx, func() (*client.Reservation, error) {
		page, err := cc.ListReservations(ctx, client.ReservationQuery{Device: alice.Device})
		if err != nil || len(page.Items) == 0 {
			return nil, err
		}
		return &page.Items[0], nil
	})
	if err != nil {
		return fmt.Errorf("part reservation: %w", err)
	}
	step("her DW100 is under warranty, so the cloud reserved a %s at her repair shop, %s: %s %s", rsv.Part, demoShopName, rsv.State, rsv.Reference)
	sr, err := waitFor(ctx, func() (*client.ServiceRequest, error) {
		page, err := cc.ListServiceRequests(ctx, client.ServiceRequestQuery{Device: alice.Device})
		if err != nil || len(page.Items) == 0 {
			return nil, err
		}
		return &page.Items[0], nil
	})
	if err != nil {
		return fmt.Errorf("service request: %w", err)
	}
	step("and opened service request %s for it (%s), which Alice sees in the portal and Contoso's support staff in the support view", sr.ID, sr.State)
	res.HeaterAlert, res.RinseAlert, res.Reservation = heat.ID, low.ID, rsv.Reference
	return nil
}

// Mail returns the mail the demo's mail server received.
func (d *Demo) Mail() []mailbox.Message { return d.mail.Messages() }

// waitFor polls fn until it returns a value, an error, or ctx ends.
func waitFor[T any](ctx context.Context, fn func() (*T, error)) (*T, error) {
	for {
		v, err := fn()
		if err != nil || v != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("not within the time the demo allows: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func openAlert(ctx context.Context, cc *client.Client, device, rule string) (*client.Alert, error) {
	page, err := cc.ListAlerts(ctx, client.AlertQuery{Device: device, State: "open"})
	if err != nil {
		return nil, err
	}
	for _, a := range page.Items {
		if a.Rule == rule {
			return &a, nil
		}
	}
	return nil, nil
}

// waitMail waits for a mail to to whose subject contains subject.
func (d *Demo) waitMail(ctx context.Context, to, subject string) (mailbox.Message, error) {
	m, err := waitFor(ctx, func() (*mailbox.Message, error) {
		for _, m := range d.mail.Messages() {
			if len(m.To) == 1 && m.To[0] == to && strings.Contains(strings.ToLower(m.Subject), strings.ToLower(subject)) {
				return &m, nil
			}
		}
		return nil, nil
	})
	if err != nil {
		return mailbox.Message{}, fmt.Errorf("mail to %s about %q: %w", to, subject, err)
	}
	return *m, nil
}

func printMail(out io.Writer, m mailbox.Message) {
	fmt.Fprintf(out, "      From: %s\n      To: %s\n      Subject: %s\n", m.From, strings.Join(m.To, ", "), m.Subject)
	for l := range strings.Lines(strings.TrimSpace(m.Body)) {
		fmt.Fprintf(out, "      | %s", l)
		if !strings.HasSuffix(l, "\n") {
			fmt.Fprintln(out)
		}
	}
}

func formatValue(v float64, unit string) string {
	return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0") + " " + unit
}

func (d *Demo) cloudClient() (*client.Client, error) {
	return client.New(d.Result.CloudURL, client.WithToken(d.Result.AdminToken), client.WithCACertPEM(d.cloud.CAPEM))
}

func randomWord() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ownerJoins plays an owner in the portal, as a browser: sign up, open the mailed link,
// sign in, claim the appliance.
func (d *Demo) ownerJoins(ctx context.Context, o DemoOwner, code string) error {
	b, err := newBrowser(d.cloud.CAPEM)
	if err != nil {
		return err
	}
	base := d.Result.CloudURL + "/portal/"
	if err := b.submit(ctx, base+"sign-up", url.Values{"email": {o.Email}, "name": {o.Name}, "password": {o.Password}, "password2": {o.Password}}); err != nil {
		return fmt.Errorf("sign up: %w", err)
	}
	m, err := d.waitMail(ctx, o.Email, "verify")
	if err != nil {
		return err
	}
	link := verifyLinkRE.FindString(m.Body)
	if link == "" {
		return fmt.Errorf("the verification mail has no link:\n%s", m.Body)
	}
	if _, err := b.get(ctx, link); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if err := b.submit(ctx, base+"sign-in", url.Values{"email": {o.Email}, "password": {o.Password}}); err != nil {
		return fmt.Errorf("sign in: %w", err)
	}
	if err := b.submit(ctx, base+"claim", url.Values{"code": {code}}); err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	return nil
}

var (
	verifyLinkRE = regexp.MustCompile(`https://\S+/portal/verify\?token=[A-Za-z0-9_-]+`)
	csrfRE       = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	errorRE      = regexp.MustCompile(`(?s)class="error"[^>]*>(.*?)<`)
)

// browser is just enough of a browser for the portal's forms: cookies, and the CSRF
// token of the form it posts.
type browser struct{ c *http.Client }

func newBrowser(caPEM []byte) (*browser, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("cloud CA: no certificate")
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	return &browser{c: &http.Client{Jar: jar, Transport: tr, Timeout: 30 * time.Second}}, nil
}

func (b *browser) get(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	return b.do(req)
}

// submit loads the form page at u and posts form with the page's CSRF token.
func (b *browser) submit(ctx context.Context, u string, form url.Values) error {
	page, err := b.get(ctx, u)
	if err != nil {
		return err
	}
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		return fmt.Errorf("%s has no form token", u)
	}
	form.Set("csrf", m[1])
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	_, err = b.do(req)
	return err
}

func (b *browser) do(req *http.Request) (string, error) {
	resp, err := b.c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode >= 400 {
		msg := ""
		if m := errorRE.FindSubmatch(body); m != nil {
			msg = ": " + strings.TrimSpace(string(m[1]))
		}
		return "", fmt.Errorf("%s %s: %s%s", req.Method, req.URL.Path, resp.Status, msg)
	}
	return string(body), nil
}
