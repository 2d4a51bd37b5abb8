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

// LinuxConfig wires manifest names to a Linux board's devices. The operator writes it for
// the board (as JSON for `moat agent --peripherals linux --peripherals-config FILE`, with the
// keys of the json tags); the app never sees it.
type LinuxConfig struct {
	// IIODir is the industrial-I/O device directory, normally /sys/bus/iio/devices.
	IIODir string `json:"iio_dir"`
	// ADC maps an ADC channel to an integer attribute under IIODir, such as
	// "iio:device0/in_voltage0_raw" (a raw reading) or "iio:device1/in_temp_input"
	// (a processed one). adc.read returns the attribute's integer unchanged.
	ADC map[int]string `json:"adc"`
	// PWMDir is the PWM class directory, normally /sys/class/pwm.
	PWMDir string `json:"pwm_dir"`
	// PWM maps a PWM name to a chip and channel, such as {"pwmchip0", 1}.
	PWM map[string]LinuxPWM `json:"pwm"`
	// GPIOChip is the GPIO character device's chip name, such as "gpiochip0"; GPIOLines
	// maps a manifest pin to a line offset on it (a pin not listed is its own offset).
	GPIOChip  string      `json:"gpio_chip"`
	GPIOLines map[int]int `json:"gpio_lines"`
	// UART maps a manifest UART name to its serial device, such as "ISU0": "/dev/ttyS1";
	// UARTBaud is the speed of every UART (115200 if zero).
	UART     map[string]string `json:"uart"`
	UARTBaud int               `json:"uart_baud"`
	// I2C maps a manifest I2C master name to its bus number N (/dev/i2c-N).
	I2C map[string]int `json:"i2c"`
}

// LinuxPWM is one channel of a sysfs PWM chip.
type LinuxPWM struct {
	Chip    string `json:"chip"`
	Channel int    `json:"channel"`
}

// Linux is the Backend of a real Linux board. ADC channels are read through the IIO sysfs
// interface, PWM outputs set through the PWM sysfs interface, GPIO lines driven through the
// GPIO character device (periph.io's gpioioctl), UARTs are serial devices in raw mode and
// I2C buses /dev/i2c-N (periph.io's sysfs I2C). It is safe for concurrent use.
type Linux struct {
	cfg     LinuxConfig
	mu      sync.Mutex          // serialises the multi-file PWM sequence, GPIO and UART state
	outputs map[int]bool        // GPIO pins set as outputs, with their level
	uarts   map[string]*os.File // open UARTs
	i2cs    map[string]i2cBus
}

// i2cBus is an open I2C bus.
type i2cBus interface {
	Tx(addr uint16, w, r []byte) error
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
	for name, dev := range cfg.UART {
		if !filepath.IsAbs(dev) || !strings.HasPrefix(filepath.Clean(dev), "/dev/") {
			errs = append(errs, fmt.Errorf("uart[%s]: %q is not a device under /dev", name, dev))
		}
	}
	for name, n := range cfg.I2C {
		if n < 0 {
			errs = append(errs, fmt.Errorf("i2c[%s]: bus %d is not a bus number", name, n))
		}
	}
	if cfg.UARTBaud == 0 {
		cfg.UARTBaud = 115200
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
