"""HTTP pieces every service's API uses: problem details and caller identity."""
