//go:build linux

package periph

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/host/v3/gpioioctl"
	"periph.io/x/host/v3/sysfs"
)

// GPIO lines through the kernel's GPIO character device (/dev/gpiochipN, uAPI v2), with
// periph.io's gpioioctl: the maintained library the build can reach (the design first named
// github.com/warthog618/go-gpiocdev, which the module proxy does not serve).

var gpioInit struct {
	once sync.Once
	err  error
}

// chip returns the configured GPIO chip, loading the chips once.
func (l *Linux) chip() (*gpioioctl.GPIOChip, error) {
	if l.cfg.GPIOChip == "" {
		return nil, fmt.Errorf("gpio: no gpio_chip configured: %w", ErrNotConnected)
	}
	gpioInit.once.Do(func() { _, gpioInit.err = driverreg.Init() })
	for _, c := range gpioioctl.Chips {
		if c.Name() == l.cfg.GPIOChip {
			return c, nil
		}
	}
	if gpioInit.err != nil {
		return nil, fmt.Errorf("gpio: %s: %w (%w)", l.cfg.GPIOChip, ErrNotConnected, gpioInit.err)
	}
	return nil, fmt.Errorf("gpio: no GPIO chip %s on this board: %w", l.cfg.GPIOChip, ErrNotConnected)
}

// line returns the chip line of a manifest pin: GPIOLines maps it, or the pin number is
// the line offset.
func (l *Linux) line(pin int) (*gpioioctl.GPIOLine, error) {
	c, err := l.chip()
	if err != nil {
		return nil, err
	}
	offset := pin
	if o, ok := l.cfg.GPIOLines[pin]; ok {
		offset = o
	}
	line := c.ByNumber(offset)
	if line == nil {
		return nil, fmt.Errorf("gpio %d: line %d of %s: %w", pin, offset, l.cfg.GPIOChip, ErrNotConnected)
	}
	return line, nil
}

// SetGPIO implements Backend: the line becomes an output at the level.
func (l *Linux) SetGPIO(_ context.Context, pin int, high bool) error {
	line, err := l.line(pin)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := line.Out(gpio.Level(high)); err != nil {
		return fmt.Errorf("gpio %d: %w", pin, err)
	}
	if l.outputs == nil {
		l.outputs = map[int]bool{}
	}
	l.outputs[pin] = high
	return nil
}

// GPIO implements Backend: an output line reads back the level last set (reading would
// turn it into an input), any other line is read as an input.
func (l *Linux) GPIO(_ context.Context, pin int) (bool, error) {
	l.mu.Lock()
	v, out := l.outputs[pin]
	l.mu.Unlock()
	if out {
		return v, nil
	}
	line, err := l.line(pin)
	if err != nil {
		return false, err
	}
	if err := line.In(gpio.PullNoChange, gpio.NoEdge); err != nil {
		return false, fmt.Errorf("gpio %d: %w", pin, err)
	}
	return bool(line.Read()), nil
}

// UARTs are serial character devices (/dev/ttyS1, /dev/ttyAMA0, ...) in raw mode at
// UARTBaud, opened once and kept.

func (l *Linux) uart(name string) (*os.File, error) {
	path, ok := l.cfg.UART[name]
	if !ok {
		return nil, fmt.Errorf("uart %s: %w", name, ErrNotConnected)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if f, ok := l.uarts[name]; ok {
		return f, nil
	}
	// O_NONBLOCK lets the runtime poller wait on it, so reads honour deadlines.
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("uart %s: %w", name, err)
	}
	if err := rawMode(f, l.cfg.UARTBaud); err != nil {
		f.Close()
		return nil, fmt.Errorf("uart %s: %w", name, err)
	}
	if l.uarts == nil {
		l.uarts = map[string]*os.File{}
	}
	l.uarts[name] = f
	return f, nil
}

// rawMode sets the terminal raw (no echo, no line editing, 8N1) at baud.
func rawMode(f *os.File, baud int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	speed, ok := baudRates[baud]
	if !ok {
		return fmt.Errorf("baud rate %d is not supported", baud)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			serr = err
			return
		}
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CBAUD
		t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL | speed
		t.Ispeed, t.Ospeed = speed, speed
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		serr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
	})
	return errors.Join(err, serr)
}

var baudRates = map[int]uint32{
	9600: unix.B9600, 19200: unix.B19200, 38400: unix.B38400, 57600: unix.B57600,
	115200: unix.B115200, 230400: unix.B230400, 460800: unix.B460800, 921600: unix.B921600,
}

// WriteUART implements Backend.
func (l *Linux) WriteUART(_ context.Context, name string, p []byte) (int, error) {
	f, err := l.uart(name)
	if err != nil {
		return 0, err
	}
	n, err := f.Write(p)
	if err != nil {
		return n, fmt.Errorf("uart %s: %w", name, err)
	}
	return n, nil
}

// ReadUART implements Backend: it waits until a byte arrives or ctx is done.
func (l *Linux) ReadUART(ctx context.Context, name string, max int) ([]byte, error) {
	f, err := l.uart(name)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, max)
	for ctx.Err() == nil {
		if err := f.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			return nil, fmt.Errorf("uart %s: %w", name, err)
		}
		n, err := f.Read(buf)
		if n > 0 {
			return buf[:n], nil
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("uart %s: %w", name, err)
		}
	}
	return nil, nil
}

// I2C buses are /dev/i2c-N, through periph.io's sysfs I2C (the I2C_RDWR ioctl), opened once
// and kept.

func (l *Linux) i2c(bus string) (i2cBus, error) {
	n, ok := l.cfg.I2C[bus]
	if !ok {
		return nil, fmt.Errorf("i2c %s: %w", bus, ErrNotConnected)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.i2cs[bus]; ok {
		return b, nil
	}
	b, err := sysfs.NewI2C(n)
	if err != nil {
		return nil, fmt.Errorf("i2c %s (/dev/i2c-%d): %w: %w", bus, n, ErrNotConnected, err)
	}
	if l.i2cs == nil {
		l.i2cs = map[string]i2cBus{}
	}
	l.i2cs[bus] = b
	return b, nil
}

// TransferI2C implements Backend: one combined write-then-read transaction.
func (l *Linux) TransferI2C(_ context.Context, bus string, addr int, w []byte, read int) ([]byte, error) {
	b, err := l.i2c(bus)
	if err != nil {
		return nil, err
	}
	r := make([]byte, read)
	if err := b.Tx(uint16(addr), w, r); err != nil { //nolint:gosec // G115: the server checks addr is 0..127
		return nil, fmt.Errorf("i2c %s address %#x: %w: %w", bus, addr, ErrNoDevice, err)
	}
	return r, nil
}
