package director

import (
	"errors"
	"fmt"
)

// CheckAgainstRepo is the Uptane cross-check the device makes before installing: every
// image a verified assignment names must be in the image repository the device verified
// with TUF (from its pinned root, signed by the offline keys), at the same path with the
// same SHA-256, length and security version (ATTACKS row 18; TestCheckAgainstRepo_RejectsMismatch),
// and its security version must not be below the device's anti-rollback floor for its kind
// (ATTACKS row 26; TestCheckAgainstRepo_RejectsBelowFloor).
//
// lookup returns the repository's entry for a target path. floors maps each kind to the
// device's floor; a kind the assignment names but floors lacks is an error (fail closed:
// a device without a floor passes 0 explicitly). Errors wrap ErrRepoMismatch or
// ErrBelowFloor and name every failing image.
func CheckAgainstRepo(a Assignment, lookup func(path string) (sha256 string, length int64, securityVersion uint32, ok bool), floors map[string]uint32) error {
	if lookup == nil {
		return errors.New("check assignment against repository: no repository lookup")
	}
	if err := a.Validate(); err != nil {
		return fmt.Errorf("check assignment against repository: %w: %w", ErrMalformed, err)
	}
	var errs []error
	for _, im := range a.Images {
		sum, length, sv, ok := lookup(im.Path)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s image %s: not in the image repository: %w", im.Kind, im.Path, ErrRepoMismatch))
			continue
		case sum != im.SHA256:
			errs = append(errs, fmt.Errorf("%s image %s: sha256 %.12s, repository has %.12q: %w", im.Kind, im.Path, im.SHA256, sum, ErrRepoMismatch))
			continue
		case length != im.Length:
			errs = append(errs, fmt.Errorf("%s image %s: length %d, repository has %d: %w", im.Kind, im.Path, im.Length, length, ErrRepoMismatch))
			continue
		case sv != im.SecurityVersion:
			errs = append(errs, fmt.Errorf("%s image %s: security version %d, repository has %d: %w", im.Kind, im.Path, im.SecurityVersion, sv, ErrRepoMismatch))
			continue
		}
		floor, ok := floors[im.Kind]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s image %s: the device has no anti-rollback floor for kind %s", im.Kind, im.Path, im.Kind))
		case sv < floor:
			errs = append(errs, fmt.Errorf("%s image %s: security version %d below the device's floor %d: %w", im.Kind, im.Path, sv, floor, ErrBelowFloor))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("check assignment %d against repository: %w", a.Counter, err)
	}
	return nil
}
