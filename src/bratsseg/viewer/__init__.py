"""Looking at results: `bratsseg view` (a case in the browser with NiiVue) and `bratsseg report` (one HTML page)."""
