-- One customer view: the core-banking customer master joined to the org chart, so every fact
-- table reaches region > branch > team > RM through a single many-to-one join on customer_id.
-- Personal data (name, id_number, phone) stays out of this view on purpose.
SELECT
    c.customer_id,
    c.segment,
    c.opened_on,
    c.closed_on,
    c.rm_id,
    o.rm_name,
    o.team,
    o.branch,
    o.region
FROM customers c
LEFT JOIN org o ON c.rm_id = o.rm_id
