package periph

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeSysfs writes files laid out as sysfs, for the Linux backend to use.
func fakeSysfs(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestLinux_ADCFromIIO(t *testing.T) {
	t.Parallel()
	root := fakeSysfs(t, map[string]string{
		"iio/iio:device0/in_voltage0_raw": "1234\n",
		"iio/iio:device1/in_temp_input":   "-5300\n",
		"iio/iio:device0/in_voltage1_raw": "n/a\n",
	})
	l, err := NewLinux(LinuxConfig{IIODir: filepath.Join(root, "iio"), ADC: map[int]string{
		0: "iio:device0/in_voltage0_raw", 1: "iio:device1/in_temp_input", 2: "iio:device0/in_voltage1_raw", 3: "iio:device9/gone",
	}})
	if err != nil {
		t.Fatalf("NewLinux() = %v", err)
	}
	ctx := context.Background()
	for ch, want := range map[int]int64{0: 1234, 1: -5300} {
		if v, err := l.ReadADC(ctx, ch); err != nil || v != want {
			t.Errorf("ReadADC(%d) = %d, %v, want %d", ch, v, err, want)
		}
	}
	for _, ch := range []int{2, 3, 4} {
		if _, err := l.ReadADC(ctx, ch); err == nil {
			t.Errorf("ReadADC(%d) = nil error, want one", ch)
		}
	}
	if err := l.SetGPIO(ctx, 4, true); !errors.Is(err, ErrUnsupported) {
		t.Errorf("SetGPIO() = %v, want ErrUnsupported", err)
	}
}

func TestLinux_PWMSysfsSequence(t *testing.T) {
	t.Parallel()
	root := fakeSysfs(t, map[string]string{
		"pwm/pwmchip0/export":          "",
		"pwm/pwmchip0/pwm1/period":     "0",
		"pwm/pwmchip0/pwm1/duty_cycle": "0",
		"pwm/pwmchip0/pwm1/enable":     "0",
	})
	l, err := NewLinux(LinuxConfig{PWMDir: filepath.Join(root, "pwm"), PWM: map[string]LinuxPWM{"PWM0": {"pwmchip0", 1}, "PWM9": {"pwmchip0", 2}}})
	if err != nil {
		t.Fatalf("NewLinux() = %v", err)
	}
	if err := l.SetPWM(context.Background(), "PWM0", PWMState{PeriodNS: 20000000, DutyNS: 1500000, Enabled: true}); err != nil {
		t.Fatalf("SetPWM() = %v", err)
	}
	for attr, want := range map[string]string{"period": "20000000", "duty_cycle": "1500000", "enable": "1"} {
		if b, _ := os.ReadFile(filepath.Join(root, "pwm/pwmchip0/pwm1", attr)); string(b) != want {
			t.Errorf("%s = %q, want %q", attr, b, want)
		}
	}
	// Channel 2 is not exported: SetPWM writes export, and fails when the kernel (here:
	// nobody) does not create the channel.
	if err := l.SetPWM(context.Background(), "PWM9", PWMState{PeriodNS: 10}); err == nil {
		t.Error("SetPWM() on a channel that never appears = nil error")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "pwm/pwmchip0/export")); string(b) != "2" {
		t.Errorf("export = %q, want \"2\"", b)
	}
}

func TestNewLinux_RejectsPathsOutside(t *testing.T) {
	t.Parallel()
	for _, cfg := range []LinuxConfig{
		{IIODir: "/sys/bus/iio/devices", ADC: map[int]string{0: "../../../etc/shadow"}},
		{IIODir: "/sys/bus/iio/devices", ADC: map[int]string{0: "/etc/shadow"}},
		{ADC: map[int]string{0: "iio:device0/in_voltage0_raw"}},
		{PWMDir: "/sys/class/pwm", PWM: map[string]LinuxPWM{"P": {"../x", 0}}},
		{PWMDir: "/sys/class/pwm", PWM: map[string]LinuxPWM{"P": {"pwmchip0", -1}}},
	} {
		if _, err := NewLinux(cfg); err == nil {
			t.Errorf("NewLinux(%+v) = nil error", cfg)
		}
	}
}
