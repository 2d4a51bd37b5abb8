package update

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moat-iot/moat/internal/atomicfile"
	"github.com/moat-iot/moat/internal/director"
)

// Files in Config.StateDir.
const (
	counterFile = "counter"     // decimal counter of the last accepted assignment
	heldFile    = "assignment"  // the last accepted assignment, byte for byte
	floorsFile  = "floors.json" // {"app": N, "os": N}
	tufDir      = "tuf"         // go-tuf's trusted metadata
)

// readCounter returns the counter of the last accepted assignment, 0 if none was.
func readCounter(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, counterFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read counter: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(string(b), "\n"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read counter: %w", err)
	}
	return n, nil
}

func writeCounter(dir string, n uint64) error {
	return atomicfile.Write(dir, counterFile, []byte(strconv.FormatUint(n, 10)+"\n"))
}

// readHeld returns the last accepted assignment as it was served, nil if none was (or it
// was accepted before this file was kept).
func readHeld(dir string) ([]byte, error) {
	f, err := os.Open(filepath.Join(dir, heldFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read held assignment: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, director.DefaultMaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read held assignment: %w", err)
	}
	if len(b) > director.DefaultMaxBytes {
		return nil, fmt.Errorf("read held assignment: larger than %d bytes", director.DefaultMaxBytes)
	}
	return b, nil
}

// readFloors returns the anti-rollback floor of every kind; a missing file means 0 for all.
func readFloors(dir string) (map[string]uint32, error) {
	floors := map[string]uint32{director.KindOS: 0, director.KindApp: 0}
	b, err := os.ReadFile(filepath.Join(dir, floorsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return floors, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read floors: %w", err)
	}
	var stored map[string]uint32
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&stored); err != nil {
		return nil, fmt.Errorf("read floors: %w", err)
	}
	if dec.More() {
		return nil, errors.New("read floors: trailing data")
	}
	for k, v := range stored {
		if _, ok := floors[k]; !ok {
			return nil, fmt.Errorf("read floors: unknown kind %q", k)
		}
		floors[k] = v
	}
	return floors, nil
}

func writeFloors(dir string, floors map[string]uint32) error {
	b, err := json.Marshal(floors)
	if err != nil {
		return err
	}
	return atomicfile.Write(dir, floorsFile, append(b, '\n'))
}
