package periph

import (
	"context"
	"fmt"
	"sync"
)

// Simulated is an in-memory Backend for tests and the fleet simulator: GPIO pins that hold
// what is written to them (or, for inputs, what the simulation drives), ADC channels fed by
// functions, UARTs that loop written bytes back to their reader (and take injected input),
// I2C devices that are 256-byte register files, and PWM outputs that remember their setting.
// Its setters are the simulation's side: the app can change nothing but outputs. It is
// safe for concurrent use.
type Simulated struct {
	mu    sync.Mutex
	pins  map[int]*simPin
	adc   map[int]func() (int64, error)
	uarts map[string]*simUART
	i2c   map[i2cKey]*[256]byte
	ptr   map[i2cKey]byte
	pwm   map[string]PWMState
}

type simPin struct {
	high, input bool
}

type simUART struct {
	rx     []byte
	notify chan struct{} // closed and replaced when bytes arrive
}

type i2cKey struct {
	bus  string
	addr int
}

// maxUARTBuffer bounds what a simulated UART holds unread; older bytes are dropped, as a
// real FIFO overruns.
const maxUARTBuffer = 64 << 10

// NewSimulated returns a board with no inputs, no ADC channels and no I2C devices.
func NewSimulated() *Simulated {
	return &Simulated{
		pins:  make(map[int]*simPin),
		adc:   make(map[int]func() (int64, error)),
		uarts: make(map[string]*simUART),
		i2c:   make(map[i2cKey]*[256]byte),
		ptr:   make(map[i2cKey]byte),
		pwm:   make(map[string]PWMState),
	}
}

// SetInput makes pin an input driven to high by the simulation (a switch, a sensor).
func (s *Simulated) SetInput(pin int, high bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pins[pin] = &simPin{high: high, input: true}
}

// Pin reports the level of pin: what the app last wrote to an output, or what the
// simulation drives on an input. A pin never touched is low.
func (s *Simulated) Pin(pin int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pins[pin]
	return p != nil && p.high
}

// SetADC makes channel read v.
func (s *Simulated) SetADC(channel int, v int64) {
	s.SetADCFunc(channel, func() (int64, error) { return v, nil })
}

// SetADCFunc makes channel read whatever f returns; an error from f is the app's io_error
// (a broken sensor). f is called without the simulator's lock held, and may be called
// concurrently.
func (s *Simulated) SetADCFunc(channel int, f func() (int64, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.adc[channel] = f
}

// FeedUART makes p arrive at the UART name, for the app to read.
func (s *Simulated) FeedUART(name string, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.uart(name)
	u.rx = append(u.rx, p...)
	if over := len(u.rx) - maxUARTBuffer; over > 0 {
		u.rx = append([]byte(nil), u.rx[over:]...)
	}
	close(u.notify)
	u.notify = make(chan struct{})
}

// AddI2C attaches a device at addr on bus whose registers start as regs (zero-padded to
// 256). A transfer's first written byte selects the register; further written bytes fill
// registers from there, and reads return registers from there, wrapping at 256.
func (s *Simulated) AddI2C(bus string, addr int, regs []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r [256]byte
	copy(r[:], regs)
	s.i2c[i2cKey{bus, addr}] = &r
}

// I2CRegisters returns a copy of the registers of the device at addr on bus, or nil.
func (s *Simulated) I2CRegisters(bus string, addr int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.i2c[i2cKey{bus, addr}]
	if r == nil {
		return nil
	}
	return append([]byte(nil), r[:]...)
}

// PWM returns the setting of the PWM output name, and whether the app ever set it.
func (s *Simulated) PWM(name string) (PWMState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.pwm[name]
	return st, ok
}

// SetGPIO implements Backend.
func (s *Simulated) SetGPIO(_ context.Context, pin int, high bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pins[pin]
	if p == nil {
		p = &simPin{}
		s.pins[pin] = p
	}
	if p.input {
		return fmt.Errorf("gpio %d: %w", pin, ErrInputPin)
	}
	p.high = high
	return nil
}

// GPIO implements Backend.
func (s *Simulated) GPIO(_ context.Context, pin int) (bool, error) {
	return s.Pin(pin), nil
}

// ReadADC implements Backend.
func (s *Simulated) ReadADC(_ context.Context, channel int) (int64, error) {
	s.mu.Lock()
	f := s.adc[channel]
	s.mu.Unlock()
	if f == nil {
		return 0, fmt.Errorf("adc channel %d: %w", channel, ErrNotConnected)
	}
	v, err := f()
	if err != nil {
		return 0, fmt.Errorf("adc channel %d: %w", channel, err)
	}
	return v, nil
}

// WriteUART implements Backend: the bytes loop back to the UART's reader.
func (s *Simulated) WriteUART(_ context.Context, name string, p []byte) (int, error) {
	s.FeedUART(name, p)
	return len(p), nil
}

// ReadUART implements Backend.
func (s *Simulated) ReadUART(ctx context.Context, name string, max int) ([]byte, error) {
	for {
		s.mu.Lock()
		u := s.uart(name)
		if len(u.rx) > 0 {
			n := min(max, len(u.rx))
			out := append([]byte(nil), u.rx[:n]...)
			u.rx = u.rx[n:]
			s.mu.Unlock()
			return out, nil
		}
		wait := u.notify
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return []byte{}, nil
		}
	}
}

// uart returns the UART name, creating it; s.mu is held.
func (s *Simulated) uart(name string) *simUART {
	u := s.uarts[name]
	if u == nil {
		u = &simUART{notify: make(chan struct{})}
		s.uarts[name] = u
	}
	return u
}

// TransferI2C implements Backend.
func (s *Simulated) TransferI2C(_ context.Context, bus string, addr int, w []byte, read int) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := i2cKey{bus, addr}
	regs := s.i2c[k]
	if regs == nil {
		return nil, fmt.Errorf("i2c %s address 0x%02x: %w", bus, addr, ErrNoDevice)
	}
	if len(w) > 0 {
		p := w[0]
		for _, b := range w[1:] {
			regs[p] = b
			p++
		}
		s.ptr[k] = w[0]
	}
	out := make([]byte, read)
	p := s.ptr[k]
	for i := range out {
		out[i] = regs[p]
		p++
	}
	s.ptr[k] = p // the register pointer auto-increments, as on an EEPROM
	return out, nil
}

// SetPWM implements Backend.
func (s *Simulated) SetPWM(_ context.Context, name string, st PWMState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pwm[name] = st
	return nil
}
