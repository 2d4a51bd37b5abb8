package demo

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/moat-iot/moat/client"
	dw100example "github.com/moat-iot/moat/examples/dw100"
	"github.com/moat-iot/moat/internal/cloud"
)

// startCloud starts Contoso's manufacturer cloud: it trusts the devices through the CA
// chain Contoso downloaded, and its staff through the security service; it runs the DW100
// rules of examples/dw100. The agents started after it hold MQTT sessions with it.
func (d *Demo) startCloud(ctx context.Context, contoso *client.Client, log *slog.Logger, step func(string, ...any)) error {
	chain, err := contoso.GetDeviceCAChain(ctx, d.Result.Tenant.ID)
	if err != nil {
		return err
	}
	dir := filepath.Join(d.dir, "contoso")
	d.Result.CAChain = filepath.Join(dir, "contoso-ca-chain.pem")
	if err := os.WriteFile(d.Result.CAChain, chain, 0o600); err != nil {
		return err
	}
	// The product's fleet rule judges a DW100 only against at least ten others; the demo's
	// fleet is four, so its copy of the rules asks for three.
	demoRules := bytes.Replace(dw100example.Rules, []byte("min_devices: 10"), []byte("min_devices: 3 "), 1)
	if bytes.Equal(demoRules, dw100example.Rules) {
		return errors.New("examples/dw100/rules.yaml no longer says min_devices: 10; update the demo")
	}
	rules := filepath.Join(dir, "dw100-rules.yaml")
	if err := os.WriteFile(rules, demoRules, 0o600); err != nil {
		return err
	}
	cfg := cloud.DefaultConfig()
	cfg.Addr, cfg.MQTTAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = filepath.Join(d.dir, "cloud")
	cfg.DeviceCA, cfg.Server, cfg.ServerCA = d.Result.CAChain, d.Result.URL, d.Result.CAFile
	cfg.Rules = []string{rules}
	if err := d.mailAndShop(ctx, &cfg, dir, log); err != nil {
		return err
	}
	c, err := cloud.Open(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("cloud: %w", err)
	}
	d.cloud = c
	d.Result.CloudURL, d.Result.CloudMQTT, d.Result.CloudCAFile = c.URL, c.MQTTAddr, c.CAFile
	d.cloudWG.Go(func() {
		if err := c.Serve(ctx); err != nil && ctx.Err() == nil {
			log.Error("cloud stopped", "err", err)
		}
	})
	step("Contoso's cloud runs at %s (MQTT for devices at mqtts://%s); it trusts its devices only through %s (moat ca-certificate download) and runs the DW100 rules of %s",
		c.URL, c.MQTTAddr, d.Result.CAChain, rules)
	return nil
}

// cloudAgentCAs is what each agent trusts the cloud's TLS certificate by.
func (d *Demo) cloudAgentCAs() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.cloud.CAPEM)
	return pool
}

// cloudTelemetry waits until the cloud holds readings of every device of devs and prints
// how many, with each device's latest drying temperature.
func (d *Demo) cloudTelemetry(ctx context.Context, devs []*demoDevice, out io.Writer, step func(string, ...any)) error {
	c, err := client.New(d.Result.CloudURL, client.WithToken(d.Result.AdminToken), client.WithCACertPEM(d.cloud.CAPEM))
	if err != nil {
		return err
	}
	type row struct {
		id     string
		n      int
		latest client.Reading
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var rows []row
		for _, dv := range devs {
			id := string(dv.key.ID())
			page, err := c.ListTelemetry(ctx, id, client.TelemetryQuery{Metric: "drying_temp", Limit: 1000})
			if err != nil {
				return fmt.Errorf("cloud telemetry: %w", err)
			}
			if len(page.Items) == 0 {
				break
			}
			rows = append(rows, row{id: id, n: len(page.Items), latest: page.Items[len(page.Items)-1]})
		}
		if len(rows) == len(devs) {
			step("every device streams its DW100's readings to Contoso's cloud over its attested MQTT session (the app publishes through the SDK; the agent holds the session):")
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "      DEVICE\tDRYING READINGS\tLATEST\tPHASE\tCYCLE")
			for _, r := range rows {
				fmt.Fprintf(tw, "      %s...\t%d\t%.1f °C\t%s\t%s\n", r.id[:16], r.n, r.latest.Value, r.latest.Phase, r.latest.Cycle)
			}
			return tw.Flush()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cloud holds no telemetry of %d of the %d devices after 2 minutes", len(devs)-len(rows), len(devs))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
