<?php
/*
 * Health check (ansible-welp): 200 only when WordPress itself runs with its database.
 * Loading WordPress answers 500 ("Error establishing a database connection") when the
 * database cannot be reached, and redirects to its installer while it is not installed;
 * the query below fails when the tables are gone.
 */
require __DIR__ . '/wp-load.php';

header('Content-Type: text/plain');
header('Cache-Control: no-store');
$scaler_ok = is_blog_installed() && $wpdb->get_var("SELECT COUNT(*) FROM $wpdb->options") > 0;
status_header($scaler_ok ? 200 : 503);
echo $scaler_ok ? "ok\n" : "not ready\n";
