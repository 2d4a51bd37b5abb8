package agentcmd

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLinuxBackend_StrictConfig: the board's peripheral map is read strictly: a typo is an
// error, not a silently unconnected peripheral.
func TestLinuxBackend_StrictConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := linuxBackend(write("ok.json", `{"gpio_chip": "gpiochip0", "uart": {"ISU0": "/dev/ttyS1"}, "adc": {"0": "iio:device0/in_voltage0_raw"}, "iio_dir": "/sys/bus/iio/devices"}`)); err != nil {
		t.Errorf("a valid map: %v", err)
	}
	for name, body := range map[string]string{
		"typo.json":    `{"gpio_chips": "gpiochip0"}`,
		"badpath.json": `{"uart": {"ISU0": "/etc/shadow"}}`,
		"garbage.json": `{`,
	} {
		if _, err := linuxBackend(write(name, body)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, err := linuxBackend(""); err == nil {
		t.Error("no file accepted")
	}
}
