// Plain data the editor layer sees: characters and motion in the canonical space of the wire contract
// (glTF: right-handed, +Y up, +Z forward, metres, quaternions x y z w), server facts and job events.
// No protobuf type appears here; ProtoConvert maps both ways.
using System;
using System.Collections.Generic;

namespace AnyMoLe.Core
{
    /// <summary>A joint hierarchy and its rest pose. Parents come before children; a root's parent is -1.</summary>
    public sealed class Skeleton
    {
        public string[] Names = new string[0];
        public int[] Parents = new int[0];
        /// <summary>J × 3: rest translation in the parent's frame (a root's in character space), metres.</summary>
        public float[] RestTranslations = new float[0];
        /// <summary>J × 4: rest rotation in the parent's frame, unit x y z w.</summary>
        public float[] RestRotations = new float[0];
        public int JointCount { get { return Names.Length; } }
    }

    /// <summary>A triangle mesh skinned to a skeleton, in bind pose, in character space.</summary>
    public sealed class SkinnedMesh
    {
        /// <summary>V × 3 positions, metres.</summary>
        public float[] Positions = new float[0];
        /// <summary>V × 3 unit normals, or empty.</summary>
        public float[] Normals = new float[0];
        /// <summary>V × 2 texture coordinates, or empty (canonical: v grows downwards from the image top).</summary>
        public float[] Uvs = new float[0];
        /// <summary>T × 3 vertex indices (canonical: counter-clockwise seen from the front).</summary>
        public int[] Triangles = new int[0];
        /// <summary>K: influences stored per vertex.</summary>
        public int InfluencesPerVertex;
        /// <summary>V × K joint indices into the skeleton.</summary>
        public int[] JointIndices = new int[0];
        /// <summary>V × K weights; each vertex's sum to 1.</summary>
        public float[] JointWeights = new float[0];
        /// <summary>J × 16 inverse bind matrices (character → joint space), column-major.</summary>
        public float[] InverseBindMatrices = new float[0];
        /// <summary>V × 4 vertex colours RGBA in [0, 1], or empty.</summary>
        public float[] Colors = new float[0];
        /// <summary>The sub-meshes' materials (empty: opaque light grey).</summary>
        public List<Material> Materials = new List<Material>();
        /// <summary>T: each triangle's index into Materials, or empty (all use the first).</summary>
        public int[] TriangleMaterials = new int[0];
        /// <summary>The distinct images Materials refer to by index.</summary>
        public List<Texture> Textures = new List<Texture>();
        public int VertexCount { get { return Positions.Length / 3; } }
    }

    /// <summary>How one sub-mesh looks: base colour factor × texture (at the mesh's uvs) × vertex colour.</summary>
    public sealed class Material
    {
        public string Name = "";
        /// <summary>RGBA in [0, 1], or empty (opaque light grey).</summary>
        public float[] BaseColor = new float[0];
        /// <summary>Index into SkinnedMesh.Textures, or -1 for none.</summary>
        public int Texture = -1;
    }

    /// <summary>An encoded image file (PNG or JPEG), sent as it is.</summary>
    public sealed class Texture
    {
        public string MimeType = "";
        public byte[] Data = new byte[0];
    }

    /// <summary>What UploadCharacter sends as CHARACTER_FORMAT_PROTO.</summary>
    public sealed class Character
    {
        public string Name = "";
        public Skeleton Skeleton = new Skeleton();
        /// <summary>Null for a skeleton-only character.</summary>
        public SkinnedMesh Mesh;
    }

    /// <summary>A clip sampled at <see cref="Fps"/>: F frames of J local rotations and the root's translation.</summary>
    public sealed class Motion
    {
        public float Fps;
        public int FrameCount;
        public int JointCount;
        /// <summary>F × J × 4 local rotations, unit x y z w, frame-major.</summary>
        public float[] Rotations = new float[0];
        /// <summary>F × 3 root translations, metres.</summary>
        public float[] RootTranslations = new float[0];
        /// <summary>F × J × 3 local translations of every joint, or null (non-roots keep their rest offsets).</summary>
        public float[] Translations;

        /// <summary>Frames [start, stop) as a new clip.</summary>
        public Motion Slice(int start, int stop)
        {
            if (start < 0 || stop > FrameCount || start >= stop)
                throw new ArgumentOutOfRangeException("stop", start + ":" + stop + " is not a range of " + FrameCount + " frames");
            int n = stop - start, j = JointCount;
            var m = new Motion { Fps = Fps, FrameCount = n, JointCount = j };
            m.Rotations = Sub(Rotations, start * j * 4, n * j * 4);
            m.RootTranslations = Sub(RootTranslations, start * 3, n * 3);
            if (Translations != null) m.Translations = Sub(Translations, start * j * 3, n * j * 3);
            return m;
        }

        /// <summary>Frame <paramref name="frame"/> as a keyframe at timeline frame <paramref name="at"/>.</summary>
        public Keyframe KeyAt(int frame, int at)
        {
            int j = JointCount;
            return new Keyframe
            {
                Frame = at,
                Rotations = Sub(Rotations, frame * j * 4, j * 4),
                RootTranslation = Sub(RootTranslations, frame * 3, 3),
                Translations = Translations == null ? null : Sub(Translations, frame * j * 3, j * 3),
            };
        }

        public static float[] Sub(float[] a, int start, int count)
        {
            var r = new float[count];
            Array.Copy(a, start, r, 0, count);
            return r;
        }
    }

    /// <summary>A pose the result must pass through, at a timeline frame.</summary>
    public sealed class Keyframe
    {
        public int Frame;
        public float[] Rotations = new float[0];
        public float[] RootTranslation = new float[0];
        /// <summary>J × 3, or null.</summary>
        public float[] Translations;
    }

    /// <summary>One in-betweening job (frame 0 = the context's first frame).</summary>
    public sealed class FillRequest
    {
        public string CharacterId = "";
        public Motion Context;
        public List<Keyframe> Keyframes = new List<Keyframe>();
        /// <summary>0: last keyframe + 1.</summary>
        public int TotalFrames;
        public string Method = "interp";
        public string Preset = "";
        /// <summary>Frames per streamed motion event; 0 lets the server choose.</summary>
        public int ChunkFrames;
        public ulong Seed;
        /// <summary>Shown in the server's job list, e.g. the clip's name.</summary>
        public string Label = "";
        /// <summary>Stored with the job, so that an editor that lost its state finds it again (ListJobs filters by
        /// them), e.g. {"asset": "Assets/Hero.anim"}. At most 32 entries.</summary>
        public Dictionary<string, string> ClientTags = new Dictionary<string, string>();
    }

    /// <summary>One method a server offers.</summary>
    public sealed class MethodDescription
    {
        public string Name = "";
        public string Description = "";
        public string[] Presets = new string[0];
        public bool Available;
        /// <summary>Why it cannot run here and what to do; empty when available.</summary>
        public string UnavailableReason = "";
        public bool SendsPreviews;
        /// <summary>Shortest context in seconds (0: one frame); 0 from servers before protocol 1.2.</summary>
        public float MinContextSeconds;
        /// <summary>When not 0, key j lies exactly (j + 1) × this many seconds after the last context frame.</summary>
        public float KeySpacingSeconds;
        /// <summary>Longest gap between consecutive poses in seconds (0: no limit).</summary>
        public float MaxGapSeconds;
        /// <summary>Whether jobs produce motion the window can write into a clip (false: a video only).</summary>
        public bool ProducesMotion = true;
    }

    /// <summary>The handshake's answer.</summary>
    public sealed class ServerInfo
    {
        public string ServerVersion = "";
        public int ProtocolMajor, ProtocolMinor;
        public List<MethodDescription> Methods = new List<MethodDescription>();
        public List<string> Devices = new List<string>();
        public bool AuthRequired;
        public long MaxMessageBytes;
        public int UploadChunkBytes;
        public int MaxJoints, MaxFrames;
    }

    /// <summary>What an upload produced.</summary>
    public sealed class UploadResult
    {
        public string CharacterId = "";
        public bool Cached;
        /// <summary>The skeleton as the server reads it: the joint order every job uses.</summary>
        public Skeleton Skeleton;
        public int VertexCount;
        public string Name = "";
        /// <summary>Payload chunks actually sent (fewer than all when the server knew the payload).</summary>
        public int ChunksSent;
    }

    /// <summary>Where a job stands; Unspecified also stands for a state added after this plugin was built.</summary>
    public enum JobState { Unspecified, Queued, Running, Completed, Failed, Cancelled, Interrupted }

    /// <summary>One line of ListJobs.</summary>
    public sealed class JobSummary
    {
        public string JobId = "";
        public JobState State;
        public string CharacterId = "", Method = "", Label = "";
        public ulong LastSeq;
        public int TotalFrames;
        public Dictionary<string, string> ClientTags = new Dictionary<string, string>();
    }

    // ---------------------------------------------------------------------------------------------- events

    /// <summary>A job event; <see cref="Seq"/> counts from 1 and lets a watcher resume after it.</summary>
    public abstract class JobEvent
    {
        public string JobId = "";
        public ulong Seq;
        /// <summary>Completed, Failed, Cancelled and Interrupted end a job; nothing follows them.</summary>
        public virtual bool IsTerminal { get { return false; } }
    }

    public sealed class QueuedEvent : JobEvent { public int Position; }

    /// <summary>An event of a kind added to the protocol after this plugin was built: nothing to show, but its
    /// sequence number counts for re-attaching.</summary>
    public sealed class UnknownEvent : JobEvent { }

    public sealed class ProgressEvent : JobEvent
    {
        public string Stage = "";
        public float StageFraction, Fraction;
        /// <summary>Seconds to completion; negative while unknown.</summary>
        public double EtaSeconds = -1;
        public string Message = "";
    }

    public sealed class PreviewEvent : JobEvent
    {
        public string Stage = "", MimeType = "";
        public int Frame, View, Width, Height;
        public byte[] Data = new byte[0];
    }

    /// <summary>Frames FrameStart .. FrameStart + FrameCount − 1 of the timeline (gap and keys).</summary>
    public sealed class MotionEvent : JobEvent
    {
        public int FrameStart, FrameCount;
        public float[] Rotations = new float[0], RootTranslations = new float[0];
        public float[] Translations;
        public bool IsFinal;
        /// <summary>J as the server says (protocol 1.2); 0 from older servers.</summary>
        public int JointCount;
    }

    public sealed class CompletedEvent : JobEvent
    {
        public string Summary = "";
        public int TotalFrames;
        public Dictionary<string, double> Metrics = new Dictionary<string, double>();
        public override bool IsTerminal { get { return true; } }
    }

    public sealed class FailedEvent : JobEvent
    {
        public RpcCode Code;
        public string Message = "", Field = "";
        public override bool IsTerminal { get { return true; } }
    }

    public sealed class CancelledEvent : JobEvent
    {
        public string Reason = "";
        public override bool IsTerminal { get { return true; } }
    }

    public sealed class InterruptedEvent : JobEvent
    {
        public string Reason = "";
        public override bool IsTerminal { get { return true; } }
    }
}
