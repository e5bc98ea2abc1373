package bundle

import "os"

// syncDir makes the entries of dir durable: a file renamed into dir is not
// sure to keep its new name after a crash until dir itself is synced.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
