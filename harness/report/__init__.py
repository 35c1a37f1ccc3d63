"""Reading the store: tables (Houlsby protocol, leaderboard) and exports."""
