--
-- PostgreSQL database dump
--


-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: _sqlx_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public._sqlx_migrations (
    version bigint NOT NULL,
    description text NOT NULL,
    installed_on timestamp with time zone DEFAULT now() NOT NULL,
    success boolean NOT NULL,
    checksum bytea NOT NULL,
    execution_time bigint NOT NULL
);


--
-- Name: dead_letters; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.dead_letters (
    seq bigint NOT NULL,
    topic text NOT NULL,
    partition_key text NOT NULL,
    message_id text NOT NULL,
    message text NOT NULL,
    created_at bigint NOT NULL,
    failed_at bigint NOT NULL,
    reason text NOT NULL
);


--
-- Name: leases; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.leases (
    source text NOT NULL,
    resource text NOT NULL,
    owner text,
    token bigint DEFAULT 0 NOT NULL,
    expires_at bigint DEFAULT 0 NOT NULL
);


--
-- Name: outbox; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.outbox (
    seq bigint NOT NULL,
    topic text NOT NULL,
    partition_key text NOT NULL,
    message_id text NOT NULL,
    message text NOT NULL,
    created_at bigint NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    last_error text,
    claimed_by text,
    claimed_until bigint
);


--
-- Name: outbox_seq_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.outbox ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.outbox_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: pollbus_meta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.pollbus_meta (
    key text NOT NULL,
    value text NOT NULL
);


--
-- Name: replicas; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.replicas (
    id text NOT NULL,
    expires_at bigint NOT NULL
);


--
-- Name: request_budget; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.request_budget (
    source text NOT NULL,
    window_start bigint NOT NULL,
    used bigint NOT NULL
);


--
-- Name: resources; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.resources (
    source text NOT NULL,
    resource text NOT NULL,
    cursor bigint,
    last_reconcile bigint,
    audit_cursor bigint,
    baseline_done boolean DEFAULT false NOT NULL,
    updated_at bigint NOT NULL
);


--
-- Name: snapshots; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.snapshots (
    source text NOT NULL,
    resource text NOT NULL,
    id text NOT NULL,
    updated bigint NOT NULL,
    fields text NOT NULL,
    seen_at bigint NOT NULL,
    mark bigint,
    missed integer DEFAULT 0 NOT NULL
);


--
-- Name: token_refresh; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.token_refresh (
    name text NOT NULL,
    holder text NOT NULL,
    until bigint NOT NULL
);


--
-- Name: tokens; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tokens (
    name text NOT NULL,
    value text NOT NULL,
    updated_at bigint NOT NULL
);


--
-- Data for Name: _sqlx_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public._sqlx_migrations VALUES (1, 'init', '2026-12-02 04:51:49.119231+00', true, '\x6d72a05fab0420f3e7daa7b31d3c05d519f055968a09b1bb0f067dd7b0d7446279e4951d83aafb6870c00d4972c58b47', 14253076);
INSERT INTO public._sqlx_migrations VALUES (2, 'outbox topic', '2026-12-02 04:51:49.13429+00', true, '\xf2abe13640481b693e6e3e69f87bbf1ee618bd2c6a8f95fd8ccaca13845e0a32799efd43aa2671dd628c72c37c6c55d2', 1346531);
INSERT INTO public._sqlx_migrations VALUES (3, 'token refresh', '2026-12-02 04:51:49.135974+00', true, '\xb3645ccd1a6f1e8ca2a558a57d792d905c115f1f6ce070f3ea26de59fec7fb4949ec60addd40abb2065e288a376f5d0b', 2112490);
INSERT INTO public._sqlx_migrations VALUES (4, 'snapshots missed', '2026-12-02 04:51:49.138392+00', true, '\xeb660713a57f6cf373c9ca70779a2d65b4100e8e33554d0123e4381ee8488cb95d3fc15f5e90cf6448e2837657a88fa7', 898829);


--
-- Data for Name: dead_letters; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: leases; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.leases VALUES ('sn', 'incident', NULL, 1, 0);


--
-- Data for Name: outbox; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: pollbus_meta; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.pollbus_meta VALUES ('application', 'pollbus');


--
-- Data for Name: replicas; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: request_budget; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: resources; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.resources VALUES ('sn', 'incident', 1717236039000000000, NULL, NULL, true, 1796187109168624018);


--
-- Data for Name: snapshots; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000000', 1717236000000000000, '{",revision":0,"Category":"hardware","Number":"INC0010000","Priority":"","State":"0","Summary":"Skjermen på kontor 0 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000001', 1717236001000000000, '{",revision":0,"Category":"hardware","Number":"INC0010001","Priority":"1","State":"1","Summary":"Skjermen på kontor 1 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000002', 1717236002000000000, '{",revision":0,"Category":"hardware","Number":"INC0010002","Priority":"2","State":"2","Summary":"Skjermen på kontor 2 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000003', 1717236003000000000, '{",revision":0,"Category":"hardware","Number":"INC0010003","Priority":"","State":"3","Summary":"Skjermen på kontor 3 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000004', 1717236004000000000, '{",revision":0,"Category":"hardware","Number":"INC0010004","Priority":"4","State":"4","Summary":"Skjermen på kontor 4 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000005', 1717236005000000000, '{",revision":0,"Category":"hardware","Number":"INC0010005","Priority":"0","State":"5","Summary":"Skjermen på kontor 5 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000006', 1717236006000000000, '{",revision":0,"Category":"hardware","Number":"INC0010006","Priority":"","State":"6","Summary":"Skjermen på kontor 6 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000007', 1717236007000000000, '{",revision":0,"Category":"hardware","Number":"INC0010007","Priority":"2","State":"0","Summary":"Skjermen på kontor 7 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000008', 1717236008000000000, '{",revision":0,"Category":"hardware","Number":"INC0010008","Priority":"3","State":"1","Summary":"Skjermen på kontor 8 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000009', 1717236009000000000, '{",revision":0,"Category":"hardware","Number":"INC0010009","Priority":"","State":"2","Summary":"Skjermen på kontor 9 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000000a', 1717236010000000000, '{",revision":0,"Category":"hardware","Number":"INC0010010","Priority":"0","State":"3","Summary":"Skjermen på kontor 10 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000000b', 1717236011000000000, '{",revision":0,"Category":"hardware","Number":"INC0010011","Priority":"1","State":"4","Summary":"Skjermen på kontor 11 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000000c', 1717236012000000000, '{",revision":0,"Category":"hardware","Number":"INC0010012","Priority":"","State":"5","Summary":"Skjermen på kontor 12 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000000d', 1717236013000000000, '{",revision":0,"Category":"hardware","Number":"INC0010013","Priority":"3","State":"6","Summary":"Skjermen på kontor 13 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000000e', 1717236014000000000, '{",revision":0,"Category":"hardware","Number":"INC0010014","Priority":"4","State":"0","Summary":"Skjermen på kontor 14 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000000f', 1717236015000000000, '{",revision":0,"Category":"hardware","Number":"INC0010015","Priority":"","State":"1","Summary":"Skjermen på kontor 15 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000010', 1717236016000000000, '{",revision":0,"Category":"hardware","Number":"INC0010016","Priority":"1","State":"2","Summary":"Skjermen på kontor 16 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000011', 1717236017000000000, '{",revision":0,"Category":"hardware","Number":"INC0010017","Priority":"2","State":"3","Summary":"Skjermen på kontor 17 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000012', 1717236018000000000, '{",revision":0,"Category":"hardware","Number":"INC0010018","Priority":"","State":"4","Summary":"Skjermen på kontor 18 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000013', 1717236019000000000, '{",revision":0,"Category":"hardware","Number":"INC0010019","Priority":"4","State":"5","Summary":"Skjermen på kontor 19 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000014', 1717236020000000000, '{",revision":0,"Category":"hardware","Number":"INC0010020","Priority":"0","State":"6","Summary":"Skjermen på kontor 20 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000015', 1717236021000000000, '{",revision":0,"Category":"hardware","Number":"INC0010021","Priority":"","State":"0","Summary":"Skjermen på kontor 21 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000016', 1717236022000000000, '{",revision":0,"Category":"hardware","Number":"INC0010022","Priority":"2","State":"1","Summary":"Skjermen på kontor 22 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000017', 1717236023000000000, '{",revision":0,"Category":"hardware","Number":"INC0010023","Priority":"3","State":"2","Summary":"Skjermen på kontor 23 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000018', 1717236024000000000, '{",revision":0,"Category":"hardware","Number":"INC0010024","Priority":"","State":"3","Summary":"Skjermen på kontor 24 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000019', 1717236025000000000, '{",revision":0,"Category":"hardware","Number":"INC0010025","Priority":"0","State":"4","Summary":"Skjermen på kontor 25 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000001a', 1717236026000000000, '{",revision":0,"Category":"hardware","Number":"INC0010026","Priority":"1","State":"5","Summary":"Skjermen på kontor 26 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000001b', 1717236027000000000, '{",revision":0,"Category":"hardware","Number":"INC0010027","Priority":"","State":"6","Summary":"Skjermen på kontor 27 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000001c', 1717236028000000000, '{",revision":0,"Category":"hardware","Number":"INC0010028","Priority":"3","State":"0","Summary":"Skjermen på kontor 28 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000001d', 1717236029000000000, '{",revision":0,"Category":"hardware","Number":"INC0010029","Priority":"4","State":"1","Summary":"Skjermen på kontor 29 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000001e', 1717236030000000000, '{",revision":0,"Category":"hardware","Number":"INC0010030","Priority":"","State":"2","Summary":"Skjermen på kontor 30 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '0000000000000000000000000000001f', 1717236031000000000, '{",revision":0,"Category":"hardware","Number":"INC0010031","Priority":"1","State":"3","Summary":"Skjermen på kontor 31 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000020', 1717236032000000000, '{",revision":0,"Category":"hardware","Number":"INC0010032","Priority":"2","State":"4","Summary":"Skjermen på kontor 32 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000021', 1717236033000000000, '{",revision":0,"Category":"hardware","Number":"INC0010033","Priority":"","State":"5","Summary":"Skjermen på kontor 33 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000022', 1717236034000000000, '{",revision":0,"Category":"hardware","Number":"INC0010034","Priority":"4","State":"6","Summary":"Skjermen på kontor 34 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000023', 1717236035000000000, '{",revision":0,"Category":"hardware","Number":"INC0010035","Priority":"0","State":"0","Summary":"Skjermen på kontor 35 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000024', 1717236036000000000, '{",revision":0,"Category":"hardware","Number":"INC0010036","Priority":"","State":"1","Summary":"Skjermen på kontor 36 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000025', 1717236037000000000, '{",revision":0,"Category":"hardware","Number":"INC0010037","Priority":"2","State":"2","Summary":"Skjermen på kontor 37 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000026', 1717236038000000000, '{",revision":0,"Category":"hardware","Number":"INC0010038","Priority":"3","State":"3","Summary":"Skjermen på kontor 38 er \"svart\""}', 1796187109168624018, NULL, 0);
INSERT INTO public.snapshots VALUES ('sn', 'incident', '00000000000000000000000000000027', 1717236039000000000, '{",revision":0,"Category":"hardware","Number":"INC0010039","Priority":"","State":"4","Summary":"Skjermen på kontor 39 er \"svart\""}', 1796187109168624018, NULL, 0);


--
-- Data for Name: token_refresh; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: tokens; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Name: outbox_seq_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.outbox_seq_seq', 1, false);


--
-- Name: _sqlx_migrations _sqlx_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public._sqlx_migrations
    ADD CONSTRAINT _sqlx_migrations_pkey PRIMARY KEY (version);


--
-- Name: dead_letters dead_letters_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.dead_letters
    ADD CONSTRAINT dead_letters_pkey PRIMARY KEY (seq);


--
-- Name: leases leases_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.leases
    ADD CONSTRAINT leases_pkey PRIMARY KEY (source, resource);


--
-- Name: outbox outbox_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_pkey PRIMARY KEY (seq);


--
-- Name: pollbus_meta pollbus_meta_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.pollbus_meta
    ADD CONSTRAINT pollbus_meta_pkey PRIMARY KEY (key);


--
-- Name: replicas replicas_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.replicas
    ADD CONSTRAINT replicas_pkey PRIMARY KEY (id);


--
-- Name: request_budget request_budget_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.request_budget
    ADD CONSTRAINT request_budget_pkey PRIMARY KEY (source, window_start);


--
-- Name: resources resources_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.resources
    ADD CONSTRAINT resources_pkey PRIMARY KEY (source, resource);


--
-- Name: snapshots snapshots_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.snapshots
    ADD CONSTRAINT snapshots_pkey PRIMARY KEY (source, resource, id);


--
-- Name: token_refresh token_refresh_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.token_refresh
    ADD CONSTRAINT token_refresh_pkey PRIMARY KEY (name);


--
-- Name: tokens tokens_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tokens
    ADD CONSTRAINT tokens_pkey PRIMARY KEY (name);


--
-- Name: outbox_partition_key; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX outbox_partition_key ON public.outbox USING btree (partition_key, seq);


--
-- Name: outbox_topic; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX outbox_topic ON public.outbox USING btree (topic, seq);


--
-- PostgreSQL database dump complete
--


