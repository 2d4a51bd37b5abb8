package periph

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// LinuxConfig wires manifest names to a Linux board's sysfs files. The operator writes it
// for the board; the app never sees it.
type LinuxConfig struct {
	// IIODir is the industrial-I/O device directory, normally /sys/bus/iio/devices.
	IIODir string
	// ADC maps an ADC channel to an integer attribute under IIODir, such as
	// "iio:device0/in_voltage0_raw" (a raw reading) or "iio:device1/in_temp_input"
	// (a processed one). adc.read returns the attribute's integer unchanged.
	ADC map[int]string
	// PWMDir is the PWM class directory, normally /sys/class/pwm.
	PWMDir string
	// PWM maps a PWM name to a chip and channel, such as {"pwmchip0", 1}.
	PWM map[string]LinuxPWM
}

// LinuxPWM is one channel of a sysfs PWM chip.
type LinuxPWM struct {
	Chip    string
	Channel int
}

// Linux is the Backend of a real Linux board. ADC channels are read through the IIO sysfs
// interface and PWM outputs set through the PWM sysfs interface. GPIO, UART and I2C are not
// implemented: the gpiochip character-device library the design names
// (github.com/warthog618/go-gpiocdev) is not available to this build, so those ops answer
// CodeUnsupported; docs/app-sdk.md says so. It is safe for concurrent use.
type Linux struct {
	cfg LinuxConfig
	mu  sync.Mutex // serialises the multi-file PWM sequence
}

// NewLinux checks cfg and returns the backend. It opens nothing until an op needs it.
func NewLinux(cfg LinuxConfig) (*Linux, error) {
	var errs []error
	if len(cfg.ADC) > 0 && cfg.IIODir == "" {
		errs = append(errs, errors.New("iio_dir: required with adc"))
	}
	for ch, attr := range cfg.ADC {
		if !localPath(attr) {
			errs = append(errs, fmt.Errorf("adc[%d]: %q is not a relative path inside iio_dir", ch, attr))
		}
	}
	if len(cfg.PWM) > 0 && cfg.PWMDir == "" {
		errs = append(errs, errors.New("pwm_dir: required with pwm"))
	}
	for name, p := range cfg.PWM {
		if !localPath(p.Chip) || strings.Contains(p.Chip, "/") || p.Channel < 0 {
			errs = append(errs, fmt.Errorf("pwm[%s]: chip must be a name such as pwmchip0 and channel not negative", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("linux peripherals config: %w", err)
	}
	return &Linux{cfg: cfg}, nil
}

func localPath(p string) bool {
	return p != "" && filepath.IsLocal(p)
}

// ReadADC implements Backend.
func (l *Linux) ReadADC(_ context.Context, channel int) (int64, error) {
	attr, ok := l.cfg.ADC[channel]
	if !ok {
		return 0, fmt.Errorf("adc channel %d: %w", channel, ErrNotConnected)
	}
	b, err := os.ReadFile(filepath.Join(l.cfg.IIODir, attr))
	if err != nil {
		return 0, fmt.Errorf("adc channel %d: %w", channel, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("adc channel %d: %s is not an integer", channel, attr)
	}
	return v, nil
}

// SetPWM implements Backend: it exports the channel if needed, sets the duty cycle to 0,
// the period, the duty cycle and the enable flag, in that order, which the kernel accepts
// from any previous setting.
func (l *Linux) SetPWM(_ context.Context, name string, s PWMState) error {
	p, ok := l.cfg.PWM[name]
	if !ok {
		return fmt.Errorf("pwm %s: %w", name, ErrNotConnected)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	chip := filepath.Join(l.cfg.PWMDir, p.Chip)
	dir := filepath.Join(chip, "pwm"+strconv.Itoa(p.Channel))
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := writeAttr(filepath.Join(chip, "export"), strconv.Itoa(p.Channel)); err != nil {
			return fmt.Errorf("pwm %s: export: %w", name, err)
		}
	}
	enable := "0"
	if s.Enabled {
		enable = "1"
	}
	steps := []struct{ attr, v string }{
		{"duty_cycle", "0"},
		{"period", strconv.FormatInt(s.PeriodNS, 10)},
		{"duty_cycle", strconv.FormatInt(s.DutyNS, 10)},
		{"enable", enable},
	}
	for _, st := range steps {
		if err := writeAttr(filepath.Join(dir, st.attr), st.v); err != nil {
			return fmt.Errorf("pwm %s: %s: %w", name, st.attr, err)
		}
	}
	return nil
}

// writeAttr writes a sysfs attribute: the file must exist (sysfs creates them).
func writeAttr(path, v string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SetGPIO implements Backend: unsupported (see Linux).
func (l *Linux) SetGPIO(context.Context, int, bool) error {
	return fmt.Errorf("gpio: %w", ErrUnsupported)
}

// GPIO implements Backend: unsupported (see Linux).
func (l *Linux) GPIO(context.Context, int) (bool, error) {
	return false, fmt.Errorf("gpio: %w", ErrUnsupported)
}

// WriteUART implements Backend: unsupported (see Linux).
func (l *Linux) WriteUART(context.Context, string, []byte) (int, error) {
	return 0, fmt.Errorf("uart: %w", ErrUnsupported)
}

// ReadUART implements Backend: unsupported (see Linux).
func (l *Linux) ReadUART(context.Context, string, int) ([]byte, error) {
	return nil, fmt.Errorf("uart: %w", ErrUnsupported)
}

// TransferI2C implements Backend: unsupported (see Linux).
func (l *Linux) TransferI2C(context.Context, string, int, []byte, int) ([]byte, error) {
	return nil, fmt.Errorf("i2c: %w", ErrUnsupported)
}
