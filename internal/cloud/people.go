package cloud

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/cloud/actions"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/cloud/owners"
	"github.com/moat-iot/moat/internal/cloud/portal"
	"github.com/moat-iot/moat/internal/cloud/shop"
	"github.com/moat-iot/moat/internal/cloud/support"
	"github.com/moat-iot/moat/internal/localtls"
)

// The people's side of the cloud (issue 14): owners' accounts and portal, the support view
// for the tenant's staff, and the outbox that performs the rules' actions (mail, webhooks,
// service requests, part reservations at repair shops, purchase prompts).

// OutboxRetention is how long done and dead outbox rows are kept (for the support view).
const OutboxRetention = 30 * 24 * time.Hour

// openPeople builds the owners' service, the portal, the support view and the outbox
// worker with its handlers, and registers the pages on mux.
func (c *Cloud) openPeople(verifier support.Verifier, mux *http.ServeMux) error {
	cfg := c.cfg
	base := c.URL
	if cfg.PortalURL != "" {
		base = strings.TrimSuffix(cfg.PortalURL, "/")
	}
	var err error
	if c.owners, err = owners.New(owners.Config{Store: c.store, BaseURL: base, Now: cfg.Now,
		Logger: c.log.With("part", "owners"), Registerer: c.reg}); err != nil {
		return err
	}

	var shops []shop.Shop
	if cfg.Shops != "" {
		if shops, err = shop.LoadShops(cfg.Shops); err != nil {
			return fmt.Errorf("shops: %w", err)
		}
	}
	var dir *shop.Directory
	if len(shops) > 0 {
		if dir, err = shop.NewDirectory(shops, shop.DefaultClientConfig()); err != nil {
			return fmt.Errorf("shops: %w", err)
		}
	}
	settings := actions.SettingsOf(c.ruleFiles)
	warranty := func(product string) time.Duration {
		s, _ := settings(product)
		return s.Warranty
	}
	c.portal, err = portal.New(portal.Config{Owners: c.owners, Store: c.store, Now: cfg.Now, Logger: c.log.With("part", "portal"),
		Shops: func() []portal.Shop {
			out := make([]portal.Shop, 0, len(shops))
			for _, s := range shops {
				out = append(out, portal.Shop{ID: s.ID, Name: s.Name})
			}
			return out
		},
		Warranty: warranty})
	if err != nil {
		return err
	}
	key, err := sessionKey(cfg)
	if err != nil {
		return err
	}
	shopName := func(id string) string {
		for _, s := range shops {
			if s.ID == id {
				return s.Name
			}
		}
		return id
	}
	if c.support, err = support.New(support.Config{Store: c.store, Verifier: verifier, Diag: c.diag, SessionKey: key,
		Now: cfg.Now, Logger: c.log.With("part", "support"), Shops: shopName, Warranty: warranty}); err != nil {
		return err
	}

	mailer, from, err := c.mailer()
	if err != nil {
		return err
	}
	endpoints, err := webhookEndpoints(cfg)
	if err != nil {
		return err
	}
	for _, e := range endpoints {
		c.webhooks = append(c.webhooks, e.Name)
	}
	hs, err := actions.Handlers(actions.Deps{Store: c.store, Mailer: mailer, Shops: shopsOrNil(dir), Settings: settings,
		PortalURL: base + "/portal/", Webhooks: c.webhooks, From: from, Now: cfg.Now, Logger: c.log.With("part", "actions")})
	if err != nil {
		return err
	}
	hs[outbox.KindEmail] = outbox.EmailHandler(mailer, from)
	wh, err := outbox.WebhookHandler(outbox.WebhookConfig{Endpoints: endpoints}, outbox.NewWebhookClient(), cfg.Now)
	if err != nil {
		return err
	}
	hs[outbox.KindWebhook] = wh
	// The worker's zero numbers are its defaults (lease 2m, 16 rows a batch, 4 at once,
	// backoff 5s doubling to 1h, dead after 25 attempts).
	if c.outbox, err = outbox.New(outbox.Config{Store: c.store, Handlers: hs, Now: cfg.Now,
		Logger: c.log.With("part", "outbox"), Registerer: c.reg}); err != nil {
		return err
	}
	c.portal.Register(mux)
	c.support.Register(mux)
	return nil
}

// shopsOrNil keeps a nil directory a nil interface (no shops: every reservation is
// recorded as no_shop).
func shopsOrNil(d *shop.Directory) actions.Shops {
	if d == nil {
		return nil
	}
	return d
}

// mailer is the SMTP mailer of the configuration, or, without --smtp-addr, one that
// leaves mail in the outbox (retried with backoff) and says why.
func (c *Cloud) mailer() (outbox.Mailer, string, error) {
	cfg := c.cfg
	if cfg.SMTPAddr == "" {
		return noMailer{}, "moat-cloud@localhost", nil
	}
	m, err := outbox.NewSMTPMailer(outbox.SMTPConfig{Addr: cfg.SMTPAddr, From: cfg.SMTPFrom, Username: cfg.SMTPUsername,
		PasswordFile: cfg.SMTPPasswordFile, TLS: cfg.SMTPTLS, CAFile: cfg.SMTPCA})
	if err != nil {
		return nil, "", fmt.Errorf("smtp: %w", err)
	}
	return m, cfg.SMTPFrom, nil
}

type noMailer struct{}

func (noMailer) Send(context.Context, outbox.Mail) error {
	return errors.New("no SMTP server is configured (moat cloud --smtp-addr): the mail waits in the outbox")
}

// webhookEndpoints reads the NAME=URL endpoints and their NAME=FILE secrets.
func webhookEndpoints(cfg Config) ([]outbox.Endpoint, error) {
	files := map[string]string{}
	for _, w := range cfg.WebhookSecretFiles {
		name, f, _ := strings.Cut(w, "=") // validated
		files[name] = f
	}
	var out []outbox.Endpoint
	for _, w := range cfg.Webhooks {
		name, u, _ := strings.Cut(w, "=")
		secret, err := os.ReadFile(files[name])
		if err != nil {
			return nil, fmt.Errorf("webhook-secret-files: %w", err)
		}
		out = append(out, outbox.Endpoint{Name: name, URL: u, Secret: outbox.Secret(strings.TrimSpace(string(secret)))})
	}
	if err := (outbox.WebhookConfig{Endpoints: out}).Validate(); err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	return out, nil
}

// sessionKey reads the support view's session key, creating it (0600) in the data
// directory when no file is named and none exists yet.
func sessionKey(cfg Config) ([]byte, error) {
	path := cfg.SessionKeyFile
	if path == "" {
		path = filepath.Join(cfg.DataDir, "session.key")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			key := make([]byte, support.KeySize)
			_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
			if err := localtls.WriteFileAtomic(path, key, 0o600); err != nil {
				return nil, fmt.Errorf("session key: %w", err)
			}
		}
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("session-key-file: %w", err)
	}
	if len(key) != support.KeySize {
		return nil, fmt.Errorf("session-key-file: %s holds %d bytes, want %d", path, len(key), support.KeySize)
	}
	return key, nil
}
