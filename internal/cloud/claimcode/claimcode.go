// Package claimcode makes and checks the claim codes printed on appliances: an owner links
// an appliance to their account with its code (internal/cloud/owners). A code is 80
// random bits written as 16 Crockford base32 characters in four groups
// (7K3M-Q9XD-2B8F-RW4T): no vowels that spell words, and the letters people confuse (I,
// L, O) read as the digits they look like. The cloud stores only Hash(code); with 2^80
// codes and rate-limited guessing, the hashes need no salt or stretching.
package claimcode

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// alphabet is Crockford's base32.
const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// Length is the number of characters of a code, without separators.
const Length = 16

// MaxInputBytes bounds what Normalize reads: a code with generous separators.
const MaxInputBytes = 64

// ErrMalformed is a code that cannot be a claim code; the message is fit for an owner.
var ErrMalformed = errors.New("a claim code is 16 letters and digits, like 7K3M-Q9XD-2B8F-RW4T")

// New returns a fresh random code in its printed form.
func New() string {
	var b [10]byte         // 80 bits
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	var out strings.Builder
	var acc uint64
	var bits uint
	n := 0
	for _, x := range b {
		acc = acc<<8 | uint64(x)
		bits += 8
		for bits >= 5 {
			bits -= 5
			if n > 0 && n%4 == 0 {
				out.WriteByte('-')
			}
			out.WriteByte(alphabet[(acc>>bits)&31])
			n++
		}
	}
	return out.String()
}

// Normalize returns the canonical form of a code as an owner typed it: upper case, no
// spaces or hyphens, I and L read as 1, O as 0.
func Normalize(s string) (string, error) {
	if len(s) > MaxInputBytes {
		return "", ErrMalformed
	}
	var out strings.Builder
	for _, r := range s {
		switch {
		case r == '-' || r == ' ':
			continue
		case r >= 'a' && r <= 'z':
			r -= 'a' - 'A'
		}
		switch r {
		case 'I', 'L':
			r = '1'
		case 'O':
			r = '0'
		}
		if r > 127 || !strings.ContainsRune(alphabet, r) {
			return "", ErrMalformed
		}
		out.WriteRune(r)
	}
	if out.Len() != Length {
		return "", ErrMalformed
	}
	return out.String(), nil
}

// Hash is what the cloud stores of a code: the SHA-256 of its canonical form, in hex.
func Hash(code string) (string, error) {
	c, err := Normalize(code)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte("moat claim code v1\x00" + c))
	return hex.EncodeToString(h[:]), nil
}
