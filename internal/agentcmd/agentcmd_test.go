package agentcmd

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent/periph"
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

// TestHeaterFault_Flags: the simulated DW100 can be told to develop a failing heater;
// anything else is refused with the flag's name.
func TestHeaterFault_Flags(t *testing.T) {
	for _, tc := range []struct {
		s     string
		after time.Duration
		want  periph.HeaterFault
		bad   bool
	}{
		{"", 0, periph.HeaterWorking, false},
		{"none", 0, periph.HeaterWorking, false},
		{"dead", time.Hour, periph.HeaterDead, false},
		{"runaway", 0, periph.HeaterRunaway, false},
		{"broken", 0, 0, true},
		{"dead", -time.Second, 0, true},
	} {
		got, err := heaterFault(tc.s, tc.after)
		if (err != nil) != tc.bad || !tc.bad && got != tc.want {
			t.Errorf("heaterFault(%q, %s) = %v, %v; want %v (error %v)", tc.s, tc.after, got, err, tc.want, tc.bad)
		}
	}
}
