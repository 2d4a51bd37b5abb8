package periph

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	if _, err := l.TransferI2C(ctx, "ISU2", 0x40, nil, 1); !errors.Is(err, ErrNotConnected) {
		t.Errorf("TransferI2C() of an unmapped bus = %v, want ErrNotConnected", err)
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

// openPTY returns a pseudo-terminal's master and the path of its slave: a serial line the
// test holds the other end of.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	rc, err := m.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr != nil {
			return
		}
		n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
	}); err != nil || ierr != nil {
		t.Fatal(err, ierr)
	}
	return m, "/dev/pts/" + strconv.Itoa(n)
}

// TestLinux_UARTRawSerial: a UART is the configured serial device in raw mode: bytes the
// app writes arrive unchanged at the other end (no newline translation), and bytes sent to
// it are read back; a read with nothing to read ends with its context.
func TestLinux_UARTRawSerial(t *testing.T) {
	master, slave := openPTY(t)
	l, err := NewLinux(LinuxConfig{UART: map[string]string{"ISU0": slave}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	msg := []byte("AT+RINSE?\n\x00\xff")
	if n, err := l.WriteUART(ctx, "ISU0", msg); err != nil || n != len(msg) {
		t.Fatalf("WriteUART = %d, %v", n, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(master, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("the line carried %q, %v; want %q unchanged", got, err, msg)
	}
	if _, err := master.Write([]byte("OK 42\n")); err != nil {
		t.Fatal(err)
	}
	b, err := l.ReadUART(ctx, "ISU0", 64)
	if err != nil || !bytes.HasPrefix([]byte("OK 42\n"), b) || len(b) == 0 {
		t.Fatalf("ReadUART = %q, %v", b, err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if b, err := l.ReadUART(short, "ISU0", 64); err != nil || len(b) != 0 {
		t.Errorf("ReadUART of a silent line = %q, %v; want nothing when the context ends", b, err)
	}
	if _, err := l.WriteUART(ctx, "ISU9", msg); !errors.Is(err, ErrNotConnected) {
		t.Errorf("an unconfigured UART: %v, want ErrNotConnected", err)
	}
	if _, err := NewLinux(LinuxConfig{UART: map[string]string{"ISU0": "/etc/passwd"}}); err == nil {
		t.Error("a UART outside /dev was accepted")
	}
}

// TestLinux_GPIOWithoutChip: a board without the configured GPIO chip or I2C bus answers
// with ErrNotConnected, never a panic.
func TestLinux_GPIOWithoutChip(t *testing.T) {
	l, err := NewLinux(LinuxConfig{GPIOChip: "gpiochip-absent"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetGPIO(t.Context(), 4, true); !errors.Is(err, ErrNotConnected) {
		t.Errorf("SetGPIO = %v, want ErrNotConnected", err)
	}
	if _, err := l.GPIO(t.Context(), 17); !errors.Is(err, ErrNotConnected) {
		t.Errorf("GPIO = %v, want ErrNotConnected", err)
	}
	l2, err := NewLinux(LinuxConfig{I2C: map[string]int{"ISU2": 97}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l2.TransferI2C(t.Context(), "ISU2", 0x40, []byte{1}, 2); !errors.Is(err, ErrNotConnected) {
		t.Errorf("TransferI2C on a missing /dev/i2c-97 = %v, want ErrNotConnected", err)
	}
}
