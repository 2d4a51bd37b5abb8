package keys

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// EnvPassphrase is the environment variable a passphrase may come from.
const EnvPassphrase = "MOAT_KEY_PASSPHRASE"

// maxPassphraseBytes bounds a passphrase (its first line).
const maxPassphraseBytes = 1024

// Passphrase finds the passphrase of a key for the CLI, in this order: the first line of
// file when it is set ("-" reads standard input, stdin), else $MOAT_KEY_PASSPHRASE through
// getenv, else none (nil, nil). A passphrase is never a plain flag value, so it stays out of
// the shell history and the process list. The line ending (LF or CRLF) is not part of it;
// every other byte is, as given. An empty first line is an error, never "no passphrase".
func Passphrase(getenv func(string) string, stdin io.Reader, file string) ([]byte, error) {
	if file != "" {
		p, err := firstLine(stdin, file)
		if err != nil {
			return nil, fmt.Errorf("passphrase file %s: %w", file, err)
		}
		return p, nil
	}
	if getenv != nil {
		if v := getenv(EnvPassphrase); v != "" {
			return []byte(v), nil
		}
	}
	return nil, nil
}

func firstLine(stdin io.Reader, file string) ([]byte, error) {
	r := stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	} else if stdin == nil {
		return nil, errors.New("no standard input")
	}
	buf, err := io.ReadAll(io.LimitReader(r, maxPassphraseBytes+2))
	if err != nil {
		return nil, err
	}
	line, _, found := bytes.Cut(buf, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	switch {
	case len(line) > maxPassphraseBytes || (!found && len(buf) > maxPassphraseBytes):
		return nil, fmt.Errorf("first line is longer than %d bytes", maxPassphraseBytes)
	case len(line) == 0:
		return nil, errors.New("first line is empty")
	}
	return line, nil
}
