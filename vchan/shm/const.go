package shm

import "idcfs/vchan"

const (
	pageSize = vchan.PageSize

	// domidFirstReserved is Xen's DOMID_FIRST_RESERVED: ids from here on
	// name special domains (DOMID_SELF, ...) and never a real one.
	domidFirstReserved = 0x7FF0

	// firstRef is the lowest grant reference handed out. Xen reserves
	// entries 0..7 (GNTTAB_NR_RESERVED_ENTRIES) for the toolstack, so a
	// guest never sees them as the refs of its own grants.
	firstRef = 8
	// maxGrants bounds the grants one domain may have outstanding, like
	// the size of a Xen grant table (32 frames of v1 entries = 16384).
	maxGrants = 16384
	// maxMapPages bounds one Map call (gntdev's per-request limit is 65536;
	// a domain cannot grant more than maxGrants anyway).
	maxMapPages = maxGrants

	// maxPort is the highest event channel port (the 2-level ABI on 64-bit
	// has 4096 ports; port 0 is never valid).
	maxPort = 4095

	hostMarker     = "xenhost"
	hostMarkerText = "idcfs simulated Xen host, layout 1\n"
)
